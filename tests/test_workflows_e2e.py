"""The example workflows in a real ComfyUI (``COMFYUI_PATH``): listed by the template browser, and run end to end.

Reuses the server of ``tests/test_e2e_comfyui.py`` (the pack symlinked onto the custom-node path, small random
weights in an ``mmaudio`` model folder, a 0.8 s test clip in the input folder). Each UI workflow is converted to
an API prompt with ``tests/workflow_api.ui_to_api`` against the server's own ``/object_info``; the model-file
widgets are pointed at the small files, the input file widgets at test media, and the sampler runs 2 steps.
``wan_text_to_video_to_audio`` needs Wan 2.1 weights and is only validated (``tests/test_workflows.py``).

Also checks that the schemas the static tests use are the ones ComfyUI serves: our nodes' (built from the V3
schemas through the stand-in) and the core snapshot's (when this ComfyUI is the snapshot's version).
"""

from __future__ import annotations

import io
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from . import test_e2e_comfyui as server
from . import test_workflows as static
from .workflow_api import check_api_prompt, input_specs, ui_to_api, widget_slots

# Fixtures and helpers shared with the other end-to-end test and the static workflow tests.
comfy = server.comfy  # the running ComfyUI (module scope: one server for this file)
pack_schemas = static.pack_schemas
COMFYUI_PATH, PACK_DIR_NAME, Comfy, _view = server.COMFYUI_PATH, server.PACK_DIR_NAME, server.Comfy, server._view
SNAPSHOT_PATH, WORKFLOW_NAMES, WORKFLOWS_DIR = static.SNAPSHOT_PATH, static.WORKFLOW_NAMES, static.WORKFLOWS_DIR

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set (path of a ComfyUI checkout)"),
]

RUNNABLE = ("video_to_audio", "text_to_audio", "image_to_audio", "regenerate_one_second")
CLIP_WITH_SOUND = "clip_with_sound.mp4"
TEST_STEPS = 2
STILL_IMAGE = "mmaudio_still.png"
# What decides widgets and their values. (Not "multiline": the stand-in's STRING input leaves it out of as_dict.)
COMPARED_OPTIONS = ("default", "min", "max", "step", "round", "control_after_generate", "forceInput", "video_upload",
                    "image_upload")


@pytest.fixture(scope="module")
def live_schemas(comfy: Comfy) -> dict[str, Any]:
    return comfy.get("/object_info")


def _load(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS_DIR / f"{name}.json").read_text(encoding="utf-8"))


def _write_with_sound(video: Path, out: Path) -> None:
    """``video`` with a 330 Hz tone as its soundtrack."""
    import torch

    from mmaudio import media

    tone = torch.sin(torch.arange(48000) / 48000 * 2 * torch.pi * 330).unsqueeze(0) * 0.3
    media.mux_audio_into_video(video, tone, 48000, out)


def _write_still(path: Path) -> None:
    import numpy as np
    from PIL import Image

    pixels = np.zeros((48, 64, 3), dtype=np.uint8)
    pixels[:, :32] = (200, 40, 40)
    pixels[16:32, 40:56] = (40, 40, 220)
    Image.fromarray(pixels).save(path)


def _for_test(prompt: dict[str, Any], comfy: Comfy) -> dict[str, Any]:
    """The prompt with the small model files, the test media and few sampler steps."""
    tiny = comfy.models
    files = {
        ("MMAudioSyncNetworkLoader", "network"): tiny.network,
        ("MMAudioSyncFeatureModelsLoader", "clip"): tiny.clip,
        ("MMAudioSyncFeatureModelsLoader", "synchformer"): tiny.synchformer,
        ("MMAudioSyncDecoderLoader", "vae"): tiny.vae,
        ("MMAudioSyncDecoderLoader", "vocoder"): tiny.vocoder,
        ("LoadVideo", "file"): "clip.mp4",
        ("LoadImage", "image"): STILL_IMAGE,
        ("MMAudioSyncSampler", "steps"): TEST_STEPS,
    }
    for node in prompt.values():
        for name in node["inputs"]:
            replacement = files.get((node["class_type"], name))
            if replacement is not None:
                node["inputs"][name] = replacement
    return prompt


def _ids(prompt: dict[str, Any], class_type: str) -> list[str]:
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


def _audio_seconds(data: bytes) -> tuple[int, float]:
    """(sample rate, decoded seconds) of the first audio stream of a file."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.rate, samples / stream.rate


def _video_seconds(data: bytes) -> tuple[float, float]:
    """(frame rate, decoded frames / frame rate) of the first video stream of a file."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        rate = float(stream.average_rate)
        return rate, frames / rate


# ---- the template browser -----------------------------------------------------------------------------------------
def test_template_browser_lists_and_serves_the_workflows(comfy):
    templates = comfy.get("/workflow_templates")
    assert sorted(templates.get(PACK_DIR_NAME, [])) == sorted(WORKFLOW_NAMES), templates
    for name in WORKFLOW_NAMES:
        served = comfy.get(f"/api/workflow_templates/{urllib.parse.quote(PACK_DIR_NAME)}/{name}.json")
        assert served == _load(name)


# ---- the schemas the static tests rely on -------------------------------------------------------------------------
def _comparable(info: dict[str, Any], file_combos: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"input_order": info.get("input_order"), "output": info["output"],
                           "output_name": info["output_name"], "output_node": info["output_node"]}
    for spec in input_specs(info):
        options = {k: spec.options[k] for k in COMPARED_OPTIONS if k in spec.options}
        choices = None if (spec.type == "COMBO" and (file_combos or not spec.choices)) else spec.choices
        out[spec.name] = (spec.section, spec.type, options, choices)
    out["widgets"] = [(s.name, s.role) for s in widget_slots(info)]
    return out


def test_our_schemas_are_what_comfyui_serves(live_schemas, pack_schemas):
    for node_type, ours in pack_schemas.items():
        assert node_type in live_schemas, f"{node_type} is not registered"
        live = live_schemas[node_type]
        # file lists differ (none in the static tests); everything else must be identical
        assert _comparable(live, file_combos=True) == _comparable(ours, file_combos=True), node_type
        assert live["python_module"].endswith(PACK_DIR_NAME)


def test_core_snapshot_is_what_this_comfyui_serves(comfy, live_schemas):
    snapshot = json.loads(SNAPSHOT_PATH.read_text(encoding="utf-8"))
    version = comfy.get("/system_stats")["system"]["comfyui_version"]
    if version != snapshot["comfyui_version"]:
        pytest.skip(f"this ComfyUI is {version}; the snapshot is of {snapshot['comfyui_version']}")
    for node_type, info in snapshot["nodes"].items():
        file_combos = node_type in ("UNETLoader", "CLIPLoader", "VAELoader", "LoadImage", "LoadVideo")
        assert _comparable(live_schemas[node_type], file_combos) == _comparable(info, file_combos), node_type


def test_wan_workflow_converts_against_the_live_schemas(live_schemas):
    prompt = ui_to_api(_load("wan_text_to_video_to_audio"), live_schemas)
    assert check_api_prompt(prompt, live_schemas) == []


# ---- running them -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", RUNNABLE)
def test_workflow_runs(name, comfy, live_schemas):
    if name == "image_to_audio":
        _write_still(comfy.input_dir / STILL_IMAGE)
    prompt = _for_test(ui_to_api(_load(name), live_schemas), comfy)
    if name == "regenerate_one_second":  # the test clip lasts 0.8 s: regenerate 0.2-0.5 s of its soundtrack
        _write_with_sound(comfy.input_dir / "clip.mp4", comfy.input_dir / CLIP_WITH_SOUND)
        for node in prompt.values():
            if node["class_type"] == "LoadVideo":
                node["inputs"]["file"] = CLIP_WITH_SOUND
            if node["class_type"] == "MMAudioSyncRegenerateRange":
                node["inputs"].update(start=0.2, end=0.5, fade=0.05)
    assert check_api_prompt(prompt, live_schemas) == []
    entry = comfy.wait(comfy.queue(prompt))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + "\n" + comfy.tail()
    outputs = entry["outputs"]
    (encode_id,) = _ids(prompt, "MMAudioSyncEncodeConditions")
    requested = prompt[encode_id]["inputs"]["duration"]

    if name in ("video_to_audio", "regenerate_one_second"):
        (save_id,), (preview_id,), (mux_id,) = (_ids(prompt, t) for t in ("SaveVideo", "PreviewAudio",
                                                                         "MMAudioSyncMuxVideo"))
        (video,) = outputs[save_id]["images"]
        assert video["type"] == "output" and video["filename"].endswith(".mp4")
        data = _view(comfy, video)
        fps, video_seconds = _video_seconds(data)
        rate, audio_seconds = _audio_seconds(data)
        assert rate == 16000  # the small models are 16 kHz ones
        # the mux trims or pads the sound to the picture; AAC rounds up to whole 1024-sample frames
        assert -1e-3 <= audio_seconds - video_seconds <= 1024 / rate + 1e-3, (audio_seconds, video_seconds, fps)
        assert video_seconds > 0.5
        assert [p["type"] for p in outputs[mux_id]["images"]] == ["temp"], "save_output is off: a preview only"
        effective = outputs[encode_id]["mmaudio_timing"][0]["duration"]
        assert 0 < effective <= video_seconds + 1e-3
        (preview,) = outputs[preview_id]["audio"]
        preview_rate, preview_seconds = _audio_seconds(_view(comfy, preview))
        assert preview_rate == 16000 and abs(preview_seconds - effective) <= 1e-3
    else:
        assert requested > 0
        (save_id,) = _ids(prompt, "SaveAudio")
        (saved,) = outputs[save_id]["audio"]
        assert saved["type"] == "output"
        rate, seconds = _audio_seconds(_view(comfy, saved))
        assert rate == 16000 and abs(seconds - requested) <= 1e-3, (seconds, requested)
        assert outputs[encode_id]["mmaudio_timing"][0]["source"] == ("image" if name == "image_to_audio" else "text")
