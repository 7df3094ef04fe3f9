"""Golden-case handlers for the conditioning features: frame choice/resizing, Synchformer, CLIP image and text.

Everything (keys, durations, sizes, tolerances, rule fingerprints) is read from the case JSON. The Synchformer and
CLIP cases have no weights file: their weights come from the deterministic rule (rule_weights.py), verified by
the case's sha256, and are loaded through the same loaders as the published checkpoints.
"""

from __future__ import annotations

import gc
import math
import re
from collections.abc import Callable
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F

from mmaudio.features import frames as fr
from mmaudio.features.clip import load_clip
from mmaudio.features.synchformer import encode_sync_frames, load_synchformer

from .cases import GoldenCase, assert_rel_l2
from .rule_weights import verified_rule_state_dict

# ----------------------------------------------------------------------------------------------- video


def _key(description: str) -> str:
    """The tensor name at the start of a JSON ``*_key`` description ("clip_pool24 ([Tc,3,16,16] ...)")."""
    return description.split()[0]


def _subset_slots_key(stream: dict[str, Any], name: str) -> str:
    found = re.search(r"\b(\w+_subset_slots)\b", stream.get("subset_key", ""))
    return found.group(1) if found else f"{name}_subset_slots"


def _decode_mp4(case: GoldenCase) -> tuple[torch.Tensor, list[float]]:
    frames, times = [], []
    with av.open(str(case.file(case.spec["mp4"]))) as container:
        for frame in container.decode(container.streams.video[0]):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
    return torch.from_numpy(np.stack(frames)), times


def _check_plan(case: GoldenCase, plan: fr.FramePlan, io: dict[str, torch.Tensor], how: str) -> None:
    spec = case.spec
    for name in ("clip", "sync"):
        stream = spec[name]
        got = list(plan.clip_indices if name == "clip" else plan.sync_indices)
        want = io[stream["src_index_key"]].tolist()
        assert got == want, f"{case.name} ({how}): {name} source indices {got} != reference {want}"
        times = plan.clip_times if name == "clip" else plan.sync_times
        want_t = io[stream["slot_time_key"]].tolist()
        assert list(times) == want_t, f"{case.name} ({how}): {name} slot times differ from the reference"
        assert len(got) == stream["num_frames"], f"{case.name} ({how}): {name} has {len(got)} slots"
    assert math.isclose(plan.duration, spec["effective_duration"], rel_tol=0, abs_tol=1e-9), (
        f"{case.name} ({how}): effective duration {plan.duration} != {spec['effective_duration']}")


def _check_pixels(case: GoldenCase, prepared: fr.PreparedFrames, io: dict[str, torch.Tensor], how: str) -> None:
    spec = case.spec
    pools_abs = float(spec["tolerances"]["pools_abs"])
    streams: dict[str, tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]] = {
        "clip": (prepared.clip_u8, fr.clip_input),
        "sync": (prepared.sync_u8, fr.sync_input),
    }
    for name, (u8, to_float) in streams.items():
        stream = spec[name]
        assert list(u8.shape[-2:]) == list(stream["size"]), f"{case.name}: {name} frames are {tuple(u8.shape)}"
        slots = io[_subset_slots_key(stream, name)]
        want = io[_key(stream["subset_key"])]
        got = u8.index_select(0, slots)
        diff = (got.int() - want.int()).abs().max().item()
        assert diff == 0, f"{case.name} ({how}): {name} subset pixels differ by up to {diff} grey levels"
        pooled_want = io[_key(stream["pool_key"])]
        kernel = u8.shape[-1] // pooled_want.shape[-1]
        pooled = F.avg_pool2d(to_float(u8), kernel)
        assert pooled.shape == pooled_want.shape, f"{case.name}: {name} pool shape {tuple(pooled.shape)}"
        err = (pooled - pooled_want).abs().max().item()
        assert err <= pools_abs, f"{case.name} ({how}): {name} pooled frames off by {err:.3e} > {pools_abs:.1e}"


def handle_video(case: GoldenCase) -> None:
    spec, io = case.spec, case.io()
    assert spec["clip"]["fps"] == fr.CLIP_FPS and spec["sync"]["fps"] == fr.SYNC_FPS, "unexpected target rates"
    native = io[spec["native"]["key"]]
    times = io[_key(spec["native"]["times_key"])]
    fps = float(io[spec["native"]["fps_key"]].reshape(-1)[0])
    duration = float(spec["requested_duration"])

    (rh, rw), (top, left) = fr.sync_resize_geometry(native.shape[1], native.shape[2])
    assert [rh, rw] == spec["sync"]["resized_size_before_crop"], f"{case.name}: sync resize {rh}x{rw}"
    assert [top, left] == spec["sync"]["crop_top_left"], f"{case.name}: sync crop offset {(top, left)}"

    # ComfyUI path: IMAGE float 0..1 plus a frame rate; small chunks exercise the chunked preparation.
    image = native.to(torch.float32) / 255.0
    prepared = fr.select_and_prepare(image, fps, duration=duration, chunk_size=3)
    _check_plan(case, prepared.plan, io, "IMAGE + fps")
    _check_pixels(case, prepared, io, "IMAGE + fps")

    # Explicit per-frame timestamps (a decoder's pts).
    _check_plan(case, fr.plan_frames(native.shape[0], times=times, duration=duration), io, "timestamps")

    # The source file decoded here (uint8 frames + pts), every frame of the file handed over.
    decoded, decoded_times = _decode_mp4(case)
    prepared = fr.select_and_prepare(decoded, times=decoded_times, duration=duration)
    _check_plan(case, prepared.plan, io, "decoded mp4")
    _check_pixels(case, prepared, io, "decoded mp4")


# ----------------------------------------------------------------------------------------------- rule-weight models


def _variant(case: GoldenCase, output: str) -> str:
    return "ln1" if "ln1" in str(case.spec["outputs"][output].get("weights", "")) else "plain"


def _input(case: GoldenCase, io: dict[str, torch.Tensor]) -> torch.Tensor:
    return io[case.spec["io_keys"]["inputs"][0]]


def _run_variants(case: GoldenCase, load: Callable[[dict[str, torch.Tensor]], Any],
                  run: Callable[[Any], torch.Tensor]) -> None:
    """For each output: rule weights of its variant (fingerprint checked), load, run, compare, free."""
    io = case.io()
    for output in case.spec["outputs"]:
        sd = verified_rule_state_dict(case.spec["weights"], _variant(case, output), case.name)
        model = load(sd)
        del sd
        actual = run(model)
        del model
        gc.collect()
        assert_rel_l2(actual, io[f"out.{output}"], case.tolerance(output), f"{case.name}: {output}")


def handle_synchformer(case: GoldenCase) -> None:
    frames_u8 = _input(case, case.io())

    def run(model: Any) -> torch.Tensor:
        return encode_sync_frames(model, frames_u8, to_input=fr.sync_input, batch=8)

    _run_variants(case, load_synchformer, run)


def handle_clip_image(case: GoldenCase) -> None:
    frames_u8 = _input(case, case.io())
    b, t = frames_u8.shape[:2]

    def run(model: Any) -> torch.Tensor:
        return model.encode_images(fr.clip_input(frames_u8.flatten(0, 1))).view(b, t, -1)

    _run_variants(case, load_clip, run)


def handle_clip_text(case: GoldenCase) -> None:
    tokens = _input(case, case.io())
    prompts = case.spec["prompts"]
    checked: list[bool] = []

    def run(model: Any) -> torch.Tensor:
        if not checked:
            ours = model.tokenize(prompts)
            assert ours.equal(tokens), f"{case.name}: tokenizer ids differ from the stored ones"
            checked.append(True)
        return model.encode_tokens(tokens)

    _run_variants(case, load_clip, run)


HANDLERS: dict[str, Callable[[GoldenCase], None]] = {
    "video": handle_video,
    "synchformer_visual": handle_synchformer,
    "clip_image": handle_clip_image,
    "clip_text": handle_clip_text,
}
