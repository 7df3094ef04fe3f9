"""The example workflows of ``workflows/``: valid ComfyUI UI files that fit the nodes they use, and convert to prompts.

Our nodes' schemas come from the pack itself (loaded through the ComfyUI stand-in, ``tests/comfy_stub``); the
core nodes' from ``tests/core_node_schemas.json``, a snapshot of ComfyUI 0.3.64's ``/object_info`` (refresh with
``tests/tools/capture_core_schemas.py``). Widget values are positional in the UI format, so every check goes through
the frontend's layout (``tests/workflow_api.widget_slots``), itself checked against nodes saved by the real
frontend in ComfyUI's own templates. Running the workflows in a real ComfyUI is ``tests/test_workflows_e2e.py``.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from mmaudio.weights.known_files import files_for_variant, known_file

from .pack_loader import REPO_ROOT, stubbed_pack
from .workflow_api import (
    CONTROL_VALUES,
    NOTE_NODES,
    WidgetSlot,
    WorkflowError,
    check_api_prompt,
    input_specs,
    links_of,
    nodes_of,
    object_info_from_schema,
    types_compatible,
    ui_to_api,
    widget_slots,
    widget_values,
)

WORKFLOWS_DIR = REPO_ROOT / "workflows"
SNAPSHOT_PATH = REPO_ROOT / "tests" / "core_node_schemas.json"
WORKFLOW_NAMES = ("video_to_audio", "text_to_audio", "image_to_audio", "wan_text_to_video_to_audio",
                  "regenerate_one_second")
OUR_PREFIX = "MMAudioSync"
# ComfyUI 0.3.64 app/custom_node_manager.py: the folders of a pack that the template browser lists (and serves).
TEMPLATE_FOLDER_NAMES = ("example_workflows", "example", "examples", "workflow", "workflows")

MODEL_SUFFIXES = (".safetensors", ".sft", ".pth", ".pt", ".bin", ".ckpt", ".gguf")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv")
# Combos whose options are the files on the user's disk: core ones must name a plausible file, ours a published
# MMAudio file of the input's kind (mmaudio/weights/known_files.py), at its place under models/mmaudio.
FILE_COMBOS: dict[tuple[str, str], tuple[str, ...] | str] = {
    ("UNETLoader", "unet_name"): MODEL_SUFFIXES,
    ("CLIPLoader", "clip_name"): MODEL_SUFFIXES,
    ("VAELoader", "vae_name"): MODEL_SUFFIXES,
    ("LoadImage", "image"): IMAGE_SUFFIXES,
    ("LoadVideo", "file"): VIDEO_SUFFIXES,
    ("MMAudioSyncNetworkLoader", "network"): "network",
    ("MMAudioSyncFeatureModelsLoader", "clip"): "clip",
    ("MMAudioSyncFeatureModelsLoader", "synchformer"): "synchformer",
    ("MMAudioSyncDecoderLoader", "vae"): "vae",
    ("MMAudioSyncDecoderLoader", "vocoder"): "vocoder",
}


# ---- fixtures -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def snapshot() -> dict[str, Any]:
    return json.loads(SNAPSHOT_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pack_schemas(tmp_path_factory) -> dict[str, dict[str, Any]]:
    """``/object_info`` entries of the pack's nodes (an empty models folder: file combos list nothing)."""
    with stubbed_pack(tmp_path_factory.mktemp("no_models")) as pack:
        extension = asyncio.run(pack.comfy_entrypoint())
        nodes = asyncio.run(extension.get_node_list())
        return {cls.GET_SCHEMA().node_id: object_info_from_schema(cls.GET_SCHEMA()) for cls in nodes}


@pytest.fixture(scope="module")
def schemas(snapshot, pack_schemas) -> dict[str, dict[str, Any]]:
    assert not set(snapshot["nodes"]) & set(pack_schemas)
    return {**snapshot["nodes"], **pack_schemas}


@pytest.fixture(scope="module", params=WORKFLOW_NAMES)
def workflow(request) -> tuple[str, dict[str, Any]]:
    path = WORKFLOWS_DIR / f"{request.param}.json"
    return request.param, json.loads(path.read_text(encoding="utf-8"))


def _pack_name() -> str:
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    match = re.search(r'^name\s*=\s*"([^"]+)"', project, re.MULTILINE)
    assert match, "pyproject.toml has no [project] name"
    return match.group(1)


# ---- value checks -------------------------------------------------------------------------------------------------
def value_problem(node_type: str, slot: WidgetSlot, value: Any) -> str | None:
    """Why ``value`` does not fit widget ``slot`` of ``node_type`` (None when it fits)."""
    spec, opts = slot.spec, slot.spec.options
    if slot.role == "control":
        return None if value in CONTROL_VALUES else f"control_after_generate value {value!r}"
    if slot.role in ("upload", "filter"):
        return None if value is None or isinstance(value, str) else f"{slot.role} value {value!r}"
    if spec.type == "COMBO":
        file_rule = FILE_COMBOS.get((node_type, spec.name))
        if file_rule is None:
            return None if value in (spec.choices or ()) else f"{value!r} is not one of {spec.choices}"
        return _file_problem(file_rule, value)
    if spec.type == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    if spec.type == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    if spec.type in ("INT", "FLOAT"):
        is_number = isinstance(value, int) or (spec.type == "FLOAT" and isinstance(value, float))
        if isinstance(value, bool) or not is_number or not math.isfinite(value):
            return f"{value!r} is not a{'n integer' if spec.type == 'INT' else ' number'}"
        low, high = opts.get("min", -math.inf), opts.get("max", math.inf)
        if not low <= value <= high:
            return f"{value!r} is outside [{low}, {high}]"
        step = opts.get("step")
        if spec.type == "INT" and step and (value - opts.get("min", 0)) % step:
            return f"{value!r} is not min + a multiple of step {step}"
        return None
    return f"unexpected widget type {spec.type}"


def _file_problem(rule: tuple[str, ...] | str, value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return f"{value!r} is not a file name"
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or "\\" in value:
        return f"{value!r} must be a relative path with '/' inside the models folder"
    if isinstance(rule, tuple):
        return None if path.suffix.lower() in rule else f"{value!r} has none of the suffixes {rule}"
    try:
        entry = known_file(value)
    except ValueError:
        return f"{value!r} is not a published MMAudio file (mmaudio/weights/known_files.py)"
    if entry.kind != rule or entry.local_path != value:
        return f"{value!r} is the {entry.kind} file {entry.local_path!r}, expected a {rule} file by that path"
    return None


def _widgets_by_type(workflow: Mapping[str, Any], schemas, node_type: str) -> list[dict[str, Any]]:
    return [widget_values(n, schemas[node_type]) for n in workflow["nodes"] if n["type"] == node_type]


def _edges(prompt: Mapping[str, Any], schemas) -> set[tuple[str, str, str, str]]:
    """(source type, source output name, target type, target input) of every link of an API prompt."""
    edges = set()
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                source = prompt[value[0]]["class_type"]
                edges.add((source, schemas[source]["output_name"][value[1]], node["class_type"], name))
    return edges


# ---- discovery ----------------------------------------------------------------------------------------------------
def test_exactly_the_four_workflows_are_shipped():
    assert sorted(p.stem for p in WORKFLOWS_DIR.glob("*.json")) == sorted(WORKFLOW_NAMES)


def test_template_browser_finds_each_workflow_once(tmp_path):
    """ComfyUI globs ``<custom_nodes>/*/<folder>/*.json`` for each accepted folder name: every workflow must be
    listed, and none twice (which a second accepted folder, e.g. example_workflows/ beside workflows/, would do)."""
    custom_nodes = tmp_path / "custom_nodes"
    custom_nodes.mkdir()
    (custom_nodes / "comfyui-mmaudio-sync").symlink_to(REPO_ROOT, target_is_directory=True)
    found = [Path(p) for name in TEMPLATE_FOLDER_NAMES for p in custom_nodes.glob(f"*/{name}/*.json")]
    assert sorted(p.stem for p in found) == sorted(WORKFLOW_NAMES)
    assert {p.parent.parent.name for p in found} == {"comfyui-mmaudio-sync"}


def test_snapshot_holds_exactly_the_core_nodes_the_workflows_use(snapshot):
    used = set()
    for name in WORKFLOW_NAMES:
        for node in json.loads((WORKFLOWS_DIR / f"{name}.json").read_text(encoding="utf-8"))["nodes"]:
            if not node["type"].startswith(OUR_PREFIX) and node["type"] not in NOTE_NODES:
                used.add(node["type"])
    assert set(snapshot["nodes"]) == used
    assert snapshot["comfyui_version"] == "0.3.64"
    for node_type, info in snapshot["nodes"].items():
        assert info["name"] == node_type and not info["python_module"].startswith("custom_nodes")


# ---- the frontend's widget layout ---------------------------------------------------------------------------------
def test_widget_layout_matches_nodes_saved_by_the_real_frontend(snapshot):
    examples = snapshot["saved_widget_values"]
    assert {"KSampler", "LoadImage", "LoadVideo", "CLIPLoader", "SaveVideo"} <= set(examples)
    for node_type, example in examples.items():
        slots = widget_slots(snapshot["nodes"][node_type])
        values = example["widgets_values"]
        assert len(values) == len(slots), (node_type, example["template"], values, slots)
        for slot, value in zip(slots, values, strict=True):
            assert value_problem(node_type, slot, value) is None, (node_type, example["template"], slot.name, value)


def test_our_widget_layouts(pack_schemas):
    def layout(node_type: str) -> list[tuple[str, str]]:
        return [(s.name, s.role) for s in widget_slots(pack_schemas[node_type])]

    assert layout("MMAudioSyncSampler") == [("seed", "value"), ("seed", "control"), ("steps", "value"),
                                            ("cfg", "value"), ("samples", "value"), ("denoise", "value")]
    # required widgets first, then the optional fps (the frontend follows input_order section by section)
    assert layout("MMAudioSyncEncodeConditions") == [("prompt", "value"), ("negative_prompt", "value"),
                                                     ("duration", "value"), ("mask_away_clip", "value"),
                                                     ("fps", "value")]
    assert layout("MMAudioSyncDecode") == []


def test_every_combo_listing_files_is_checked_as_a_file(schemas):
    for node_type, info in schemas.items():
        for spec in input_specs(info):
            if spec.type == "COMBO" and spec.is_widget and not spec.choices:
                assert (node_type, spec.name) in FILE_COMBOS, f"{node_type}.{spec.name} lists files on disk"
    for node_type, name in FILE_COMBOS:
        assert any(s.name == name and s.type == "COMBO" for s in input_specs(schemas[node_type])), (node_type, name)


# ---- every workflow -----------------------------------------------------------------------------------------------
def test_ui_format(workflow):
    name, data = workflow
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"):
        assert key in data, f"{name}: no {key!r}"
    nodes, links = nodes_of(data), links_of(data)
    assert data["last_node_id"] >= max(nodes)
    assert data["last_link_id"] >= max(links)
    for node in nodes.values():
        for key in ("id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties",
                    "widgets_values"):
            assert key in node, f"{name}: node {node.get('id')} has no {key!r}"
        assert node["mode"] == 0, f"{name}: node {node['id']} is muted or bypassed"
    orders = sorted(n["order"] for n in nodes.values())
    assert orders == list(range(len(nodes)))


def test_nodes_do_not_overlap(workflow):
    """Each node's box, title bar included (30 px above ``pos``), keeps clear of the others."""
    name, data = workflow
    title, margin = 30, 10
    boxes = [(n["id"], n["pos"][0], n["pos"][1] - title, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in data["nodes"]]
    for i, (a, ax0, ay0, ax1, ay1) in enumerate(boxes):
        for b, bx0, by0, bx1, by1 in boxes[i + 1:]:
            apart = ax1 + margin <= bx0 or bx1 + margin <= ax0 or ay1 + margin <= by0 or by1 + margin <= ay0
            assert apart, f"{name}: nodes {a} and {b} overlap"


def test_links_are_consistent(workflow, schemas):
    name, data = workflow
    nodes, links = nodes_of(data), links_of(data)
    for link in links.values():
        where = f"{name}: link {link.id}"
        origin, target = nodes.get(link.origin_id), nodes.get(link.target_id)
        assert origin is not None and target is not None, f"{where} joins missing nodes"
        assert 0 <= link.origin_slot < len(origin["outputs"]), f"{where}: no output {link.origin_slot}"
        assert 0 <= link.target_slot < len(target["inputs"]), f"{where}: no input {link.target_slot}"
        output, socket = origin["outputs"][link.origin_slot], target["inputs"][link.target_slot]
        assert link.id in (output["links"] or []), f"{where} is not listed by its output"
        assert socket["link"] == link.id, f"{where} is not the link of its input"
        assert link.type == output["type"], f"{where} has type {link.type}, its output {output['type']}"
        assert types_compatible(output["type"], socket["type"]), f"{where}: {output['type']} -> {socket['type']}"
        schema_output = schemas[origin["type"]]["output"][link.origin_slot]
        schema_input = next(s for s in input_specs(schemas[target["type"]]) if s.name == socket["name"])
        assert types_compatible(schema_output, schema_input.type), f"{where}: schema types do not fit"
    for node in nodes.values():
        for socket in node["inputs"]:
            if socket["link"] is not None:
                link = links[socket["link"]]
                assert link.target_id == node["id"] and node["inputs"][link.target_slot] is socket
        for slot, output in enumerate(node["outputs"]):
            for link_id in output["links"] or []:
                assert (links[link_id].origin_id, links[link_id].origin_slot) == (node["id"], slot)


def test_only_core_nodes_and_ours(workflow, schemas, pack_schemas):
    name, data = workflow
    pack = _pack_name()
    for node in data["nodes"]:
        if node["type"] in NOTE_NODES:
            continue
        assert node["type"] in schemas, f"{name}: unknown node type {node['type']}"
        ours = node["type"] in pack_schemas
        assert node["properties"]["Node name for S&R"] == node["type"]
        assert node["properties"]["cnr_id"] == (pack if ours else "comfy-core"), f"{name}: {node['type']}"


def test_sockets_match_the_schemas(workflow, schemas):
    name, data = workflow
    for node in data["nodes"]:
        if node["type"] in NOTE_NODES:
            assert node["inputs"] == [] and node["outputs"] == []
            continue
        info = schemas[node["type"]]
        where = f"{name}: node {node['id']} ({node['type']})"
        assert [o["name"] for o in node["outputs"]] == info["output_name"], where
        assert [o["type"] for o in node["outputs"]] == info["output"], where
        specs = {s.name: s for s in input_specs(info)}
        names = [s["name"] for s in node["inputs"]]
        assert len(names) == len(set(names)), f"{where}: an input is listed twice"
        for socket in node["inputs"]:
            spec = specs.get(socket["name"])
            assert spec is not None, f"{where}: no input {socket['name']!r} in the schema"
            assert socket["type"] == spec.type, f"{where}: {socket['name']} is {spec.type}"
            assert ("widget" in socket) == spec.is_widget, f"{where}: {socket['name']} widget flag"
            if spec.is_widget:
                assert socket["widget"] == {"name": spec.name} and socket["link"] is not None, where
        for spec in specs.values():
            if spec.is_widget:
                continue
            assert spec.name in names, f"{where}: socket {spec.name!r} missing"
            if spec.section == "required":
                socket = node["inputs"][names.index(spec.name)]
                assert socket["link"] is not None, f"{where}: required input {spec.name!r} is not connected"


def test_widget_values_fit_the_schemas(workflow, schemas):
    name, data = workflow
    for node in data["nodes"]:
        if node["type"] in NOTE_NODES:
            continue
        slots = widget_slots(schemas[node["type"]])
        values = node["widgets_values"]
        where = f"{name}: node {node['id']} ({node['type']})"
        assert isinstance(values, list) and len(values) == len(slots), f"{where}: {values} for {slots}"
        for slot, value in zip(slots, values, strict=True):
            problem = value_problem(node["type"], slot, value)
            assert problem is None, f"{where}, widget {slot.name} ({slot.role}): {problem}"


def test_model_files_are_one_published_set(workflow, schemas):
    """The network, VAE and vocoder are of one mode; each file's name is where the README puts it."""
    name, data = workflow
    files = {}
    for node_type in ("MMAudioSyncNetworkLoader", "MMAudioSyncFeatureModelsLoader", "MMAudioSyncDecoderLoader"):
        (values,) = _widgets_by_type(data, schemas, node_type)
        files |= {k: v for k, v in values.items() if k != "precision"}
        assert values["precision"] == "auto"
    # the original releases of the reference's default network, at the paths the catalogue puts them
    original = {kind: entry.local_path for kind, entry in files_for_variant("large_44k_v2", prefer="original").items()}
    assert files == original, name
    assert files["network"] == "mmaudio_large_44k_v2.pth" and files["vae"] == "v1-44.pth"
    assert {known_file(files[k]).mode for k in ("network", "vae", "vocoder")} == {"44k"}
    for node in data["nodes"]:
        for model in node["properties"].get("models", []):
            assert model["name"] in widget_values(node, schemas[node["type"]]).values()
            assert model["url"].startswith("https://huggingface.co/")
            if node["type"].startswith(OUR_PREFIX):
                assert model["url"] == known_file(model["name"]).url and model["directory"] == "mmaudio"


def test_reference_settings(workflow, schemas):
    name, data = workflow
    (sampler,) = _widgets_by_type(data, schemas, "MMAudioSyncSampler")
    assert (sampler["steps"], sampler["cfg"], sampler["samples"]) == (25, 4.5, 1)
    (encode,) = _widgets_by_type(data, schemas, "MMAudioSyncEncodeConditions")
    assert encode["mask_away_clip"] is False
    if name in ("video_to_audio", "wan_text_to_video_to_audio", "regenerate_one_second"):
        assert encode["duration"] == 0.0, "a clip's sound lasts as long as the clip"
    else:
        assert encode["duration"] == 8.0, "no clip: the training duration"


def test_each_workflow_explains_itself(workflow, schemas, pack_schemas):
    name, data = workflow
    notes = [n for n in data["nodes"] if n["type"] in NOTE_NODES]
    assert len(notes) == 1, name
    (text,) = notes[0]["widgets_values"]
    assert 200 < len(text) < 2500, f"{name}: note of {len(text)} characters"
    assert "models/mmaudio" in text
    for kind in ("network", "vae", "vocoder", "synchformer", "clip"):
        assert f"`{files_for_variant('large_44k_v2', prefer='original')[kind].local_path}`" in text
    # the nodes it names (ours in *italics*, core ones in **bold**) exist under those names
    ours = {info["display_name"]: node_type for node_type, info in pack_schemas.items()}
    core = {info["display_name"] for node_type, info in schemas.items() if node_type not in pack_schemas}
    for named in re.findall(r"(?<!\*)\*(MMAudio [^*]+)\*(?!\*)", text):
        assert named in ours, f"{name}: the note names {named!r}, which is no node of the pack"
    for named in re.findall(r"\*\*([^*]+)\*\*", text):
        assert named in core, f"{name}: the note names {named!r}, which is no core node's display name"
    download = pack_schemas.get("MMAudioSyncDownloadWeights")
    if download is not None and "Download Weights" in text:
        (layout,) = re.findall(r"layout `([^`]+)`", text)
        assert layout in next(s.choices for s in input_specs(download) if s.name == "layout")


def test_shipped_files_are_what_the_builder_writes(workflow, snapshot, schemas):
    """``workflows/*.json`` are generated by ``tools/build_workflows.py``: a hand edit, or a change to the builder
    or to a schema not followed by a rebuild, shows here."""
    from tools import build_workflows

    name, data = workflow
    (graph,) = [g for g in build_workflows.GRAPHS if g.name == name]
    built = build_workflows.build(graph, schemas, build_workflows.pack_identity(), snapshot["comfyui_version"])
    assert data == json.loads(json.dumps(built)), f"{name}: run .venv/bin/python -m tools.build_workflows"


# ---- conversion to API prompts ------------------------------------------------------------------------------------
def test_converts_to_a_valid_api_prompt(workflow, schemas):
    name, data = workflow
    prompt = ui_to_api(data, schemas)
    assert check_api_prompt(prompt, schemas) == []
    assert {node["class_type"] for node in prompt.values()} == {
        n["type"] for n in data["nodes"] if n["type"] not in NOTE_NODES}
    assert len(prompt) == len(data["nodes"]) - 1
    for node_id, node in prompt.items():
        info = schemas[node["class_type"]]
        for slot in widget_slots(info):
            if slot.role != "value":
                continue
            linked = any(s["name"] == slot.name and s["link"] is not None
                         for s in nodes_of(data)[int(node_id)]["inputs"])
            assert linked == isinstance(node["inputs"][slot.name], list), (name, node_id, slot.name)
        assert not any(v in CONTROL_VALUES for v in node["inputs"].values() if isinstance(v, str)), (name, node)
    assert json.loads(json.dumps(prompt)) == prompt


EXPECTED_EDGES = {
    "video_to_audio": {
        ("LoadVideo", "VIDEO", "MMAudioSyncEncodeConditions", "video"),
        ("MMAudioSyncFeatureModelsLoader", "feature_models", "MMAudioSyncEncodeConditions", "feature_models"),
        ("MMAudioSyncNetworkLoader", "network", "MMAudioSyncSampler", "network"),
        ("MMAudioSyncEncodeConditions", "conditions", "MMAudioSyncSampler", "conditions"),
        ("MMAudioSyncDecoderLoader", "decoder", "MMAudioSyncDecode", "decoder"),
        ("MMAudioSyncSampler", "latents", "MMAudioSyncDecode", "latents"),
        ("MMAudioSyncDecode", "audio", "MMAudioSyncMuxVideo", "audio"),
        ("LoadVideo", "VIDEO", "MMAudioSyncMuxVideo", "video"),
        ("MMAudioSyncMuxVideo", "video", "SaveVideo", "video"),
        ("MMAudioSyncDecode", "audio", "PreviewAudio", "audio"),
    },
    "text_to_audio": {
        ("MMAudioSyncFeatureModelsLoader", "feature_models", "MMAudioSyncEncodeConditions", "feature_models"),
        ("MMAudioSyncNetworkLoader", "network", "MMAudioSyncSampler", "network"),
        ("MMAudioSyncEncodeConditions", "conditions", "MMAudioSyncSampler", "conditions"),
        ("MMAudioSyncDecoderLoader", "decoder", "MMAudioSyncDecode", "decoder"),
        ("MMAudioSyncSampler", "latents", "MMAudioSyncDecode", "latents"),
        ("MMAudioSyncDecode", "audio", "SaveAudio", "audio"),
    },
    "image_to_audio": {
        ("LoadImage", "IMAGE", "MMAudioSyncEncodeConditions", "images"),
        ("MMAudioSyncFeatureModelsLoader", "feature_models", "MMAudioSyncEncodeConditions", "feature_models"),
        ("MMAudioSyncNetworkLoader", "network", "MMAudioSyncSampler", "network"),
        ("MMAudioSyncEncodeConditions", "conditions", "MMAudioSyncSampler", "conditions"),
        ("MMAudioSyncDecoderLoader", "decoder", "MMAudioSyncDecode", "decoder"),
        ("MMAudioSyncSampler", "latents", "MMAudioSyncDecode", "latents"),
        ("MMAudioSyncDecode", "audio", "SaveAudio", "audio"),
    },
    "wan_text_to_video_to_audio": {
        ("UNETLoader", "MODEL", "ModelSamplingSD3", "model"),
        ("ModelSamplingSD3", "MODEL", "KSampler", "model"),
        ("CLIPLoader", "CLIP", "CLIPTextEncode", "clip"),
        ("CLIPTextEncode", "CONDITIONING", "KSampler", "positive"),
        ("CLIPTextEncode", "CONDITIONING", "KSampler", "negative"),
        ("EmptyHunyuanLatentVideo", "LATENT", "KSampler", "latent_image"),
        ("KSampler", "LATENT", "VAEDecode", "samples"),
        ("VAELoader", "VAE", "VAEDecode", "vae"),
        ("VAEDecode", "IMAGE", "MMAudioSyncEncodeConditions", "images"),
        ("MMAudioSyncFeatureModelsLoader", "feature_models", "MMAudioSyncEncodeConditions", "feature_models"),
        ("MMAudioSyncNetworkLoader", "network", "MMAudioSyncSampler", "network"),
        ("MMAudioSyncEncodeConditions", "conditions", "MMAudioSyncSampler", "conditions"),
        ("MMAudioSyncDecoderLoader", "decoder", "MMAudioSyncDecode", "decoder"),
        ("MMAudioSyncSampler", "latents", "MMAudioSyncDecode", "latents"),
        ("VAEDecode", "IMAGE", "CreateVideo", "images"),
        ("MMAudioSyncDecode", "audio", "CreateVideo", "audio"),
        ("CreateVideo", "VIDEO", "SaveVideo", "video"),
    },
    "regenerate_one_second": {
        ("LoadVideo", "VIDEO", "MMAudioSyncEncodeConditions", "video"),
        ("LoadVideo", "VIDEO", "GetVideoComponents", "video"),
        ("MMAudioSyncFeatureModelsLoader", "feature_models", "MMAudioSyncEncodeConditions", "feature_models"),
        ("MMAudioSyncNetworkLoader", "network", "MMAudioSyncEncodeConditions", "network"),
        ("MMAudioSyncNetworkLoader", "network", "MMAudioSyncSampler", "network"),
        ("MMAudioSyncEncodeConditions", "conditions", "MMAudioSyncSampler", "conditions"),
        ("MMAudioSyncDecoderLoader", "decoder", "MMAudioSyncEncodeAudio", "decoder"),
        ("GetVideoComponents", "audio", "MMAudioSyncEncodeAudio", "audio"),
        ("MMAudioSyncEncodeAudio", "latents", "MMAudioSyncRegenerateRange", "latents"),
        ("MMAudioSyncRegenerateRange", "latents", "MMAudioSyncSampler", "latents"),
        ("MMAudioSyncDecoderLoader", "decoder", "MMAudioSyncDecode", "decoder"),
        ("MMAudioSyncSampler", "latents", "MMAudioSyncDecode", "latents"),
        ("MMAudioSyncDecode", "audio", "MMAudioSyncMuxVideo", "audio"),
        ("LoadVideo", "VIDEO", "MMAudioSyncMuxVideo", "video"),
        ("MMAudioSyncMuxVideo", "video", "SaveVideo", "video"),
        ("MMAudioSyncDecode", "audio", "PreviewAudio", "audio"),
    },
}


def test_graph_shape(workflow, schemas):
    name, data = workflow
    prompt = ui_to_api(data, schemas)
    assert _edges(prompt, schemas) == EXPECTED_EDGES[name]


def test_visual_inputs_per_workflow(workflow, schemas):
    """Video file: the VIDEO itself (streamed by its own timestamps, as the README recommends); generated video:
    frames with their real rate; image: one still; text: nothing visual."""
    name, data = workflow
    prompt = ui_to_api(data, schemas)
    (encode,) = [n["inputs"] for n in prompt.values() if n["class_type"] == "MMAudioSyncEncodeConditions"]
    if name in ("video_to_audio", "regenerate_one_second"):
        assert prompt[encode["video"][0]]["class_type"] == "LoadVideo"
        assert "images" not in encode and encode["fps"] == 0.0  # fps is for IMAGE frames only
        uses = [(n["class_type"], n["inputs"]) for n in prompt.values()]
        frames_read = [i for t, i in uses if t == "MMAudioSyncEncodeConditions" and "images" in i]
        assert not frames_read, "frames come from the VIDEO, streamed: Get Video Components would hold them in RAM"
        return
    assert "video" not in encode
    if name == "text_to_audio":
        assert "images" not in encode
    if name == "image_to_audio":
        assert encode["fps"] == 0.0


def test_wan_chain_runs_at_wans_frame_rate(schemas):
    data = json.loads((WORKFLOWS_DIR / "wan_text_to_video_to_audio.json").read_text(encoding="utf-8"))
    prompt = ui_to_api(data, schemas)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for node in prompt.values():
        by_type.setdefault(node["class_type"], []).append(node["inputs"])
    (encode,), (create,) = by_type["MMAudioSyncEncodeConditions"], by_type["CreateVideo"]
    assert encode["fps"] == create["fps"] == 16.0
    (clip_loader,), (latent,) = by_type["CLIPLoader"], by_type["EmptyHunyuanLatentVideo"]
    assert clip_loader["type"] == "wan"
    assert (latent["length"] - 1) % 4 == 0 and latent["length"] / 16.0 <= 10.0
    (sampler,) = by_type["KSampler"]
    assert sampler["denoise"] == 1.0
    (node,) = [n for n in data["nodes"] if n["type"] == "KSampler"]
    assert node["widgets_values"][1] == "fixed", "tweaking the sound must not regenerate the video"


# ---- the converter on hand-made graphs ----------------------------------------------------------------------------
TOY_SCHEMAS: dict[str, dict[str, Any]] = {
    "Source": {"input": {"required": {"seed": ["INT", {"default": 0, "min": 0, "max": 10,
                                                       "control_after_generate": True}],
                                      "mode": [["a", "b"], {}]}},
               "input_order": {"required": ["seed", "mode"]}, "output": ["IMAGE"], "output_name": ["IMAGE"]},
    "Filter": {"input": {"required": {"image": ["IMAGE", {}], "strength": ["FLOAT", {"default": 1.0}]},
                         "optional": {"mask": ["MASK", {}]}},
               "input_order": {"required": ["image", "strength"], "optional": ["mask"]},
               "output": ["IMAGE"], "output_name": ["IMAGE"]},
    "Sink": {"input": {"required": {"images": ["IMAGE", {}], "prefix": ["STRING", {"default": "x"}]}},
             "input_order": {"required": ["images", "prefix"]}, "output": [], "output_name": []},
}


def _toy(nodes: list[tuple[int, str, list, list, int]], links: list[list]) -> dict[str, Any]:
    """Nodes (id, type, inputs, widgets_values, mode) and links [id, from, slot, to, slot, type]."""
    return {"nodes": [{"id": i, "type": t, "inputs": ins, "outputs": [], "widgets_values": w, "mode": m}
                      for i, t, ins, w, m in nodes],
            "links": links}


def _chain(filter_mode: int) -> dict[str, Any]:
    return _toy([(1, "Source", [], [3, "randomize", "b"], 0),
                 (2, "Filter", [{"name": "image", "type": "IMAGE", "link": 1}], [0.5], filter_mode),
                 (3, "Sink", [{"name": "images", "type": "IMAGE", "link": 2}], ["out"], 0),
                 (4, "Note", [], ["just a note"], 0)],
                [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]])


def test_converter_maps_positional_widgets_and_drops_control_values():
    prompt = ui_to_api(_chain(0), TOY_SCHEMAS)
    assert prompt == {
        "1": {"class_type": "Source", "inputs": {"seed": 3, "mode": "b"}, "_meta": {"title": "Source"}},
        "2": {"class_type": "Filter", "inputs": {"strength": 0.5, "image": ["1", 0]}, "_meta": {"title": "Filter"}},
        "3": {"class_type": "Sink", "inputs": {"prefix": "out", "images": ["2", 0]}, "_meta": {"title": "Sink"}},
    }


def test_converter_wires_around_bypassed_and_drops_muted_nodes():
    bypassed = ui_to_api(_chain(4), TOY_SCHEMAS)
    assert set(bypassed) == {"1", "3"} and bypassed["3"]["inputs"]["images"] == ["1", 0]
    muted = ui_to_api(_chain(2), TOY_SCHEMAS)
    assert set(muted) == {"1", "3"} and "images" not in muted["3"]["inputs"]
    assert check_api_prompt(muted, TOY_SCHEMAS) == ["3 (Sink): required input 'images' is missing"]


def test_converter_follows_reroutes_and_inlines_primitives():
    graph = _toy([(1, "Source", [], [3, "fixed", "a"], 0),
                  (5, "Reroute", [{"name": "", "type": "*", "link": 1}], [], 0),
                  (6, "PrimitiveNode", [], [0.25, "fixed"], 0),
                  (2, "Filter", [{"name": "image", "type": "IMAGE", "link": 2},
                                 {"name": "strength", "type": "FLOAT", "widget": {"name": "strength"}, "link": 3}],
                   [1.0], 0)],
                 [[1, 1, 0, 5, 0, "IMAGE"], [2, 5, 0, 2, 0, "IMAGE"], [3, 6, 0, 2, 1, "FLOAT"]])
    prompt = ui_to_api(graph, TOY_SCHEMAS)
    assert prompt["2"]["inputs"] == {"image": ["1", 0], "strength": 0.25}
    assert set(prompt) == {"1", "2"}


def test_converter_knows_the_extra_widgets_of_combos():
    """A combo with control_after_generate also stores the control's filter text; an upload button its value."""
    info = {"input": {"required": {"choice": [["x", "y"], {"control_after_generate": True}],
                                   "file": ["COMBO", {"options": [], "image_upload": True}],
                                   "n": ["INT", {}]}},
            "input_order": {"required": ["choice", "file", "n"]}, "output": [], "output_name": []}
    assert [(s.name, s.role) for s in widget_slots(info)] == [
        ("choice", "value"), ("choice", "control"), ("choice", "filter"), ("file", "value"), ("file", "upload"),
        ("n", "value")]
    node = {"id": 1, "widgets_values": ["y", "increment-wrap", "", "a.png", "image", 3]}
    assert widget_values(node, info) == {"choice": "y", "file": "a.png", "n": 3}
    audio = {"input": {"required": {"audio": ["COMBO", {"options": [], "audio_upload": True}]}},
             "input_order": {"required": ["audio"]}}
    assert widget_values({"id": 2, "widgets_values": ["a.flac", None, None]}, audio) == {"audio": "a.flac"}


def test_converter_rejects_what_does_not_fit():
    wrong_count = _chain(0)
    wrong_count["nodes"][0]["widgets_values"] = [3, "b"]  # the control value is missing
    with pytest.raises(WorkflowError, match="2 widget values"):
        ui_to_api(wrong_count, TOY_SCHEMAS)
    unknown = _chain(0)
    unknown["nodes"][1]["type"] = "Nope"
    with pytest.raises(WorkflowError, match="unknown node type 'Nope'"):
        ui_to_api(unknown, TOY_SCHEMAS)
    dangling = _chain(0)
    dangling["links"].pop()
    with pytest.raises(WorkflowError, match="link 2 is referenced but not defined"):
        ui_to_api(dangling, TOY_SCHEMAS)
    with pytest.raises(WorkflowError, match="not a UI workflow"):
        ui_to_api({"1": {"class_type": "Sink", "inputs": {}}}, TOY_SCHEMAS)


def test_prompt_check_names_type_mismatches():
    prompt = ui_to_api(_chain(0), TOY_SCHEMAS)
    prompt["3"]["inputs"]["images"] = ["2", 1]
    prompt["2"]["inputs"]["bogus"] = 1
    problems = check_api_prompt(prompt, TOY_SCHEMAS)
    assert "3 (Sink): input 'images' links to output 1 of 2, which has 1 outputs" in problems
    assert "2 (Filter): unknown input 'bogus'" in problems
    fed_wrong = ui_to_api(_chain(0), {**TOY_SCHEMAS, "Source": {**TOY_SCHEMAS["Source"], "output": ["MASK"]}})
    assert check_api_prompt(fed_wrong, {**TOY_SCHEMAS, "Source": {**TOY_SCHEMAS["Source"], "output": ["MASK"]}}) == [
        "2 (Filter): input 'image' (IMAGE) is fed MASK by 1"]
