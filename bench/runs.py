"""Measure one variant on one device: features, conditions, sampling, decoding, end to end, memory, agreement.

Every repeat is one complete generation of a clip with our library (frames -> features -> conditions -> Euler
sampling with batched guidance -> VAE -> vocoder), each stage marked on one clock, so the end-to-end time and the
stage times come from the same runs. After it, in the same repeat, the sampling stage alone is run again with
two-pass guidance and, when a reference checkout is given, with the reference network and sampler on the same
weights, features and noise. Interleaving the three keeps them under the same machine load.
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from bench import components
from bench.library import ReferenceModules, library_module
from bench.measure import RunRecorder, memory_probe, summarize
from bench.quality import compare
from bench.reference import build_reference_network, reference_sample

FEATURE_STAGES = ("frames", "clip", "sync", "text")
DECODE_STAGES = ("vae", "vocoder")
STAGED_PARTS = ("features", "network", "decoder")  # --staged: moved to the device for their stage only
MOVE_STAGES = tuple(f"{way}_{part}" for part in STAGED_PARTS for way in ("load", "unload"))


@dataclass
class Settings:
    """What to measure and how (the command line's options, parsed)."""

    device: torch.device
    dtype_name: str = "fp32"  # storage dtype of the flow network's weights
    steps: int = 25
    duration: float = 8.0
    repeats: int = 3
    warmup: int = 1
    cfg: float = 4.5
    batch: int = 1
    seed: int = 42
    features: str = "all"  # all | sync | none
    video_size: tuple[int, int] = (360, 640)  # source frames (height, width) for the feature stage
    video_fps: float = 25.0
    decoder_dtype_name: str = "fp32"
    compile: bool = False
    compile_mode: str = "default"
    two_pass: bool = True
    quality: bool = True
    quality_dtypes: tuple[str, ...] = ("bf16", "fp16")
    quality_steps: int | None = None  # default: steps
    reference: ReferenceModules | None = None
    reference_error: str | None = None  # why the reference is not compared (when it was asked for)
    reference_dtype_name: str | None = None  # the reference's weights dtype; None: the same as ours
    fast_paths: bool = True  # Winograd convolutions (CPU float32) and adaLN on distinct sync rows
    staged: bool = False  # models wait on the CPU; each stage moves its own to the device (timed as stages)
    log: Callable[[str], None] = print

    @property
    def dtype(self) -> torch.dtype:
        return _parse_dtype(self.dtype_name)

    @property
    def decoder_dtype(self) -> torch.dtype:
        return _parse_dtype(self.decoder_dtype_name)


def _parse_dtype(name: str) -> torch.dtype:
    return library_module("weights.precision").parse_dtype(name)


@dataclass
class Workload:
    """The built models and the fixed inputs of one variant."""

    spec: components.VariantSpec
    lengths: Any  # SequenceLengths
    state_dict: dict[str, torch.Tensor]
    net: Any
    decoder: Any
    extractor: Any | None
    frames: torch.Tensor | None
    x0: torch.Tensor
    inputs: dict[str, torch.Tensor]  # clip_f, sync_f, text_f used for sampling (from features or random)
    outputs: dict[tuple[str, str, int], torch.Tensor] = field(default_factory=dict)  # (impl/dtype, cfg, steps)


# ---- building ----------------------------------------------------------------------------------------------
def _random_features(spec: components.VariantSpec, lengths: Any, seed: int) -> dict[str, torch.Tensor]:
    """Feature-shaped inputs when the feature stage is skipped: L2-normalised CLIP rows, unit-scale sync."""
    gen = torch.Generator().manual_seed(seed + 100)
    cfg = spec.network
    clip_f = torch.randn(1, lengths.clip_seq_len, cfg.clip_dim, generator=gen)
    sync_f = torch.randn(1, lengths.sync_seq_len, cfg.sync_dim, generator=gen)
    text_f = torch.randn(1, cfg.text_seq_len, cfg.text_dim, generator=gen)
    return {"clip_f": torch.nn.functional.normalize(clip_f, dim=-1), "sync_f": sync_f,
            "text_f": torch.nn.functional.normalize(text_f, dim=-1)}


def _synthetic_frames(settings: Settings, seed: int) -> torch.Tensor:
    """A ComfyUI IMAGE batch [N, H, W, 3] (float32 in [0, 1]) covering the duration at the source frame rate."""
    count = math.ceil(settings.duration * settings.video_fps) + 1
    height, width = settings.video_size
    gen = torch.Generator().manual_seed(seed + 200)
    return torch.rand(count, height, width, 3, generator=gen)


def _feature_dtype(settings: Settings) -> torch.dtype:
    """CLIP and Synchformer weights: float32 on the CPU, the network's compute dtype on an accelerator."""
    if settings.device.type == "cpu":
        return torch.float32
    precision = library_module("weights.precision")
    return precision.compute_dtype_for(settings.dtype, settings.device)


def build_workload(name: str, settings: Settings) -> Workload:
    model = library_module("model")
    sampling = library_module("sampling")
    spec = components.variant_spec(name)
    lengths = model.SequenceLengths.for_duration(settings.duration, spec.mode)
    state_dict = components.network_state_dict(spec, settings.seed)
    net = components.build_network(state_dict, settings.dtype, settings.device)
    net.set_duration(settings.duration, spec.mode)
    decoder = components.build_decoder(spec, settings.seed, settings.device, settings.decoder_dtype)
    extractor = frames = None
    if settings.features != "none":
        extractor = components.build_features(spec, settings.seed, settings.device, _feature_dtype(settings),
                                              with_clip=settings.features == "all")
        frames = _synthetic_frames(settings, settings.seed)
    if settings.compile:
        net.predict_flow = torch.compile(net.predict_flow, mode=settings.compile_mode, dynamic=False)
    if settings.staged:
        for module in (net, decoder, extractor):
            if module is not None:
                module.to("cpu")
    x0 = sampling.initial_noise(settings.seed, settings.batch, lengths.latent_seq_len, spec.network.latent_dim,
                                device=settings.device)
    return Workload(spec, lengths, state_dict, net, decoder, extractor, frames, x0,
                    _random_features(spec, lengths, settings.seed))


# ---- one run of our pipeline -------------------------------------------------------------------------------
def _extract_features(work: Workload, settings: Settings, rec: RunRecorder) -> dict[str, torch.Tensor]:
    frames_mod = library_module("features.frames")
    fx = work.extractor
    features = dict(work.inputs)
    with rec.stage("frames"):
        plan = frames_mod.plan_frames(work.frames.shape[0], settings.video_fps, duration=settings.duration)
        prepared = frames_mod.prepare_frames(work.frames, plan)
    if fx.clip is not None:
        with rec.stage("clip"):
            features["clip_f"] = fx.encode_clip_frames(prepared)
    with rec.stage("sync"):
        features["sync_f"] = fx.encode_sync_frames(prepared)
    if fx.clip is not None:
        with rec.stage("text"):
            features["text_f"] = fx.encode_text(["the sound of the benchmark clip"])
    return features


@contextlib.contextmanager
def resident(module: torch.nn.Module | None, part: str, settings: Settings, rec: RunRecorder) -> Iterator[None]:
    """With --staged, ``module`` on the device for the block and back on the CPU after it; both moves are timed
    (and their memory measured) as stages of their own, so the end-to-end figure includes them."""
    if not settings.staged or module is None:
        yield
        return
    with rec.stage(f"load_{part}"):
        module.to(settings.device)
    try:
        yield
    finally:
        with rec.stage(f"unload_{part}"):
            module.to("cpu")


@contextlib.contextmanager
def arithmetic(fast: bool) -> Iterator[None]:
    """Our library with its exact-but-reordered fast paths on, or off (the reference's order of operations):
    Winograd F(2, 3) convolutions on a CPU and adaLN computed once per distinct sync row. A library without
    them (an older checkout given with --library) is left as it is."""
    try:
        winograd = library_module("model.winograd")
    except ImportError:
        winograd = None
    conditions = library_module("model.conditions")
    threshold = getattr(conditions, "DISTINCT_ROWS_WORTHWHILE", None)
    with winograd.use_winograd(fast) if winograd is not None else contextlib.nullcontext():
        if threshold is not None and not fast:
            conditions.DISTINCT_ROWS_WORTHWHILE = 0.0
        try:
            yield
        finally:
            if threshold is not None:
                conditions.DISTINCT_ROWS_WORTHWHILE = threshold


def run_ours(work: Workload, settings: Settings, *, steps: int, batched: bool, features: bool, decode: bool,
             net: Any = None, fast: bool | None = None,
             ) -> tuple[dict[str, dict[str, Any]], torch.Tensor, dict[str, torch.Tensor]]:
    """One generation with our library; returns the recorder's stage results, x1 and the features used.
    ``fast`` (default: the settings') switches the library's fast paths (see :func:`arithmetic`)."""
    sampling = library_module("sampling")
    net = net or work.net
    rec = RunRecorder(settings.device)
    with torch.inference_mode(), arithmetic(settings.fast_paths if fast is None else fast):
        if features and work.extractor is not None:
            with resident(work.extractor, "features", settings, rec):
                inputs = _extract_features(work, settings, rec)
        else:
            inputs = work.inputs
        with resident(net, "network", settings, rec):
            with rec.stage("conditions"):
                conditions, empty = sampling.build_conditions(
                    net, clip_f=inputs["clip_f"], sync_f=inputs["sync_f"], text_f=inputs["text_f"],
                    batch_size=settings.batch, dtype=net.compute_dtype, device=settings.device)
            with rec.stage("sampling"):
                x1 = sampling.sample(net, work.x0, conditions, empty, num_steps=steps, cfg_strength=settings.cfg,
                                     callback=lambda _k, _n, _x: rec.step(), batched_cfg=batched)
            latents = net.unnormalize(x1.float())
        if decode:
            with resident(work.decoder, "decoder", settings, rec):
                with rec.stage("vae"):
                    mel = work.decoder.decode_mel(latents)
                with rec.stage("vocoder"):
                    wave = work.decoder.vocode(mel)[..., :work.lengths.num_audio_samples]
            if not bool(torch.isfinite(wave).all()):
                settings.log(f"warning: {work.spec.name}: the decoded waveform is not finite")
    return rec.results(), x1.float().cpu(), {k: v.detach().cpu() for k, v in inputs.items()}


def run_reference(work: Workload, settings: Settings, ref_net: torch.nn.Module, *, steps: int,
                  dtype: torch.dtype) -> tuple[dict[str, dict[str, Any]], torch.Tensor]:
    rec = RunRecorder(settings.device)
    with torch.inference_mode():
        x1 = reference_sample(settings.reference, ref_net, work.x0, work.inputs["clip_f"], work.inputs["sync_f"],
                              work.inputs["text_f"], steps=steps, cfg=settings.cfg, dtype=dtype, recorder=rec)
    return rec.results(), x1.float().cpu()


# ---- aggregation -------------------------------------------------------------------------------------------
def _total(result: dict[str, dict[str, Any]], names: tuple[str, ...]) -> float | None:
    present = [result[n]["seconds"] for n in names if n in result]
    return sum(present) if present else None


def _stage_summary(runs: list[dict[str, dict[str, Any]]], name: str) -> dict[str, Any] | None:
    if not runs or name not in runs[0]:
        return None
    out = {"seconds": summarize([r[name]["seconds"] for r in runs]),
           "cpu_seconds": summarize([r[name]["cpu_seconds"] for r in runs]),
           "peak_bytes": max(r[name]["peak_bytes"] for r in runs),
           "peak_delta_bytes": max(r[name]["peak_delta_bytes"] for r in runs)}
    steps = [s for r in runs for s in r[name]["step_seconds"]]
    if steps:
        out["step_seconds"] = summarize(steps)
        out["step_seconds"].pop("runs")
    return out


def _combined(runs: list[dict[str, dict[str, Any]]], names: tuple[str, ...],
              first_run: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    totals = [_total(r, names) for r in runs]
    if not runs or totals[0] is None:
        return None
    present = [n for n in names if n in runs[0]]
    return {"seconds": summarize(totals), "stages": present,
            "peak_bytes": max(r[n]["peak_bytes"] for r in [*runs, first_run] for n in present),
            "peak_delta_bytes": max(r[n]["peak_delta_bytes"] for r in runs for n in present),
            "first_run_peak_delta_bytes": max(first_run[n]["peak_delta_bytes"] for n in present)}


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "seconds",
           stat: str = "median") -> float | None:
    if not a or not b or key not in a or key not in b:
        return None
    return a[key][stat] / b[key][stat]


# ---- the variant -------------------------------------------------------------------------------------------
def measure_variant(name: str, settings: Settings) -> dict[str, Any]:
    log = settings.log
    log(f"[{name}] building models with random weights ...")
    work = build_workload(name, settings)
    compute_dtype = work.net.compute_dtype
    ref_name = settings.reference_dtype_name or settings.dtype_name
    ref_dtype = _parse_dtype(ref_name)
    ref_net = None
    reference_note = settings.reference_error
    if settings.reference is not None:
        if ref_dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            reference_note = "the reference has no fp8 path; not compared"
        else:
            ref_net = build_reference_network(settings.reference, work.spec, work.state_dict, work.lengths,
                                              settings.device, ref_dtype)
            if settings.compile:
                ref_net.predict_flow = torch.compile(ref_net.predict_flow, mode=settings.compile_mode, dynamic=False)
    with_features = work.extractor is not None

    # Two steps: the first call fills the network's per-device caches (rotary tables, timestep frequencies),
    # which torch.compile guards on, so a compiled network recompiles once at the second call.
    warm_steps = min(2, settings.steps)
    first_run: dict[str, dict[str, Any]] | None = None  # the cold run: memory not yet held by the allocator
    for _ in range(settings.warmup):
        log(f"[{name}] warm-up ({warm_steps} steps)")
        result, _, feats = run_ours(work, settings, steps=warm_steps, batched=True, features=with_features,
                                    decode=True)
        first_run = first_run or result
        work.inputs = feats  # sampling inputs from the real feature extractor from now on
        if settings.two_pass:
            run_ours(work, settings, steps=warm_steps, batched=False, features=False, decode=False)
        if ref_net is not None:
            run_reference(work, settings, ref_net, steps=warm_steps, dtype=ref_dtype)

    e2e_runs, two_pass_runs, ref_runs = [], [], []
    for i in range(settings.repeats):
        log(f"[{name}] repeat {i + 1}/{settings.repeats}: end to end (batched guidance)")
        result, x1, feats = run_ours(work, settings, steps=settings.steps, batched=True, features=with_features,
                                     decode=True)
        work.inputs = feats
        e2e_runs.append(result)
        first_run = first_run or result
        work.outputs[(settings.dtype_name, "batched", settings.steps)] = x1
        if settings.two_pass:
            log(f"[{name}] repeat {i + 1}/{settings.repeats}: sampling with two-pass guidance")
            result, x1, _ = run_ours(work, settings, steps=settings.steps, batched=False, features=False,
                                     decode=False)
            two_pass_runs.append(result)
            work.outputs[(settings.dtype_name, "two_pass", settings.steps)] = x1
        if ref_net is not None:
            log(f"[{name}] repeat {i + 1}/{settings.repeats}: reference sampling (two-pass guidance)")
            result, x1 = run_reference(work, settings, ref_net, steps=settings.steps, dtype=ref_dtype)
            ref_runs.append(result)
            work.outputs[("reference_" + ref_name, "two_pass", settings.steps)] = x1

    memory = memory_probe(settings.device)
    out: dict[str, Any] = {
        "variant": name,
        "device": str(settings.device),
        "dtype": settings.dtype_name,
        "compute_dtype": str(compute_dtype).removeprefix("torch."),
        "decoder_dtype": settings.decoder_dtype_name,
        "mode": work.spec.mode,
        "sequence_lengths": {"latent": work.lengths.latent_seq_len, "clip": work.lengths.clip_seq_len,
                             "sync": work.lengths.sync_seq_len, "text": work.spec.network.text_seq_len},
        "parameters": {
            "network": components.parameter_count(work.net),
            "vae_decoder": components.parameter_count(work.decoder.vae),
            "vocoder": components.parameter_count(work.decoder.vocoder),
            "clip": components.parameter_count(work.extractor.clip if with_features else None),
            "synchformer": components.parameter_count(work.extractor.synchformer if with_features else None),
        },
        "network_weight_bytes": components.weight_bytes(work.net),
        "memory_measure": memory.describe(),
        "stages": {},
    }
    stages = out["stages"]
    for stage in (*FEATURE_STAGES, "conditions", "sampling", *DECODE_STAGES, *MOVE_STAGES):
        summary = _stage_summary(e2e_runs, stage)
        if summary is not None:
            # Later runs reuse memory the allocator kept, so the cold run shows what a stage really needs.
            summary["first_run_peak_delta_bytes"] = first_run[stage]["peak_delta_bytes"]
            stages[stage] = summary
    stages["features"] = _combined(e2e_runs, FEATURE_STAGES, first_run)
    stages["decoding"] = _combined(e2e_runs, DECODE_STAGES, first_run)
    stages["end_to_end"] = _combined(e2e_runs, (*FEATURE_STAGES, "conditions", "sampling", *DECODE_STAGES,
                                                *MOVE_STAGES), first_run)
    if stages["features"] is None:
        stages.pop("features")
        out["features_note"] = "feature extraction skipped (--features none): random features of the real shapes"
    elif settings.features == "sync":
        out["features_note"] = "CLIP skipped (--features sync): random CLIP image and text features"

    if two_pass_runs:
        out["sampling_two_pass"] = _stage_summary(two_pass_runs, "sampling")
        out["ratios"] = {"batched_over_two_pass": _ratio(stages["sampling"], out["sampling_two_pass"])}
    if ref_runs:
        ref = {"conditions": _stage_summary(ref_runs, "conditions"),
               "sampling": _stage_summary(ref_runs, "sampling"),
               "dtype": ref_name,
               "stubbed_modules": list(settings.reference.stubbed),
               "path": str(settings.reference.root)}
        ours_x1 = work.outputs[(settings.dtype_name, "batched", settings.steps)]
        ref_x1 = work.outputs[("reference_" + ref_name, "two_pass", settings.steps)]
        ref["latent_agreement"] = compare(ours_x1, ref_x1)
        out["reference"] = ref
        ratios = out.setdefault("ratios", {})
        ratios["sampling_over_reference"] = _ratio(stages["sampling"], ref["sampling"])
        # Fastest step of each: the least disturbed by other processes on a shared machine.
        ratios["fastest_step_over_reference"] = _ratio(stages["sampling"], ref["sampling"], "step_seconds", "min")
        ratios["cpu_time_over_reference"] = _ratio(stages["sampling"], ref["sampling"], "cpu_seconds")
        if two_pass_runs:
            ratios["two_pass_over_reference"] = _ratio(out["sampling_two_pass"], ref["sampling"])
    elif reference_note:
        out["reference"] = {"skipped": reference_note}

    if settings.quality:
        out["quality"] = quality_guard(work, settings, ref_net)
    del ref_net, work
    gc.collect()
    if settings.device.type == "cuda":
        torch.cuda.empty_cache()
    return out


# ---- quality guard -----------------------------------------------------------------------------------------
def _sampled(work: Workload, settings: Settings, dtype_name: str, cfg_mode: str, steps: int,
             ref_net: torch.nn.Module | None = None) -> torch.Tensor:
    """x1 of one setting, from the timing runs when they made it, else from a new run."""
    key = (dtype_name, cfg_mode, steps)
    if key in work.outputs:
        return work.outputs[key]
    if dtype_name.startswith("reference_"):
        _, x1 = run_reference(work, settings, ref_net, steps=steps, dtype=_parse_dtype(dtype_name[10:]))
    else:
        net = work.net if dtype_name == settings.dtype_name else components.build_network(
            work.state_dict, _parse_dtype(dtype_name), settings.device)
        net.set_duration(settings.duration, work.spec.mode)
        _, x1, _ = run_ours(work, settings, steps=steps, batched=cfg_mode == "batched", features=False,
                            decode=False, net=net, fast=False if cfg_mode == "two_pass_plain" else None)
    work.outputs[key] = x1
    return x1


def quality_guard(work: Workload, settings: Settings, ref_net: torch.nn.Module | None) -> dict[str, Any]:
    """Each fast setting's final latents against our float32 two-pass result with the fast paths off (the
    reference's arithmetic, which it reproduces bit for bit)."""
    steps = settings.quality_steps or settings.steps
    ref_name = settings.reference_dtype_name or settings.dtype_name
    settings.log(f"[{work.spec.name}] quality guard ({steps} steps)")
    baseline = _sampled(work, settings, "fp32", "two_pass_plain", steps)
    rows = [("fp32, two-pass guidance", "fp32", "two_pass")] if settings.fast_paths else []
    rows.append(("fp32, batched guidance", "fp32", "batched"))
    rows += [(f"{d} weights, batched guidance", d, "batched") for d in settings.quality_dtypes if d != "fp32"]
    if settings.dtype_name not in ("fp32", *settings.quality_dtypes):
        rows.append((f"{settings.dtype_name} weights, batched guidance", settings.dtype_name, "batched"))
    results = []
    for label, dtype_name, cfg_mode in rows:
        x1 = _sampled(work, settings, dtype_name, cfg_mode, steps)
        results.append({"setting": label, "dtype": dtype_name, "guidance": cfg_mode, **compare(x1, baseline)})
    if settings.reference is not None:
        # The reference at each precision, on the same weights (cast as its demo casts them: everything,
        # including t and the timestep frequencies; it has no fp8 path).
        for dtype_name in dict.fromkeys(("fp32", ref_name, *settings.quality_dtypes)):
            if dtype_name not in ("fp32", "bf16", "fp16"):
                continue
            net = ref_net if dtype_name == ref_name and ref_net is not None else build_reference_network(
                settings.reference, work.spec, work.state_dict, work.lengths, settings.device,
                _parse_dtype(dtype_name))
            x1 = _sampled(work, settings, f"reference_{dtype_name}", "two_pass", steps, net)
            results.append({"setting": f"reference {dtype_name} (two-pass)", "dtype": dtype_name,
                            "guidance": "two_pass", **compare(x1, baseline)})
    fast = "Winograd convolutions and distinct-row adaLN" if settings.device.type == "cpu" else "distinct-row adaLN"
    return {"baseline": "ours, fp32 weights, two-pass guidance, fast paths off", "steps": steps,
            "fast_paths": fast if settings.fast_paths else "off",
            "metric_on": "final latents x1",
            "rows": results}
