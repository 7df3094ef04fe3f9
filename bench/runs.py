"""Measure one variant on one device: the engine's generation end to end, its stages, memory and agreement.

Every timed repeat is one generation by the library's engine (``mmaudio.engine``: ``encode_conditions``,
``sample_latents``, ``decode_audio``), the same chain the ComfyUI nodes and the command line drive. The benchmark
only differs in the :class:`BenchRuntime` it hands the engine: the runtime's ``stage()`` is where each stage
begins and ends on the recorder's clock, ``progress("sampling", ...)`` is where each Euler step ends, and with
``--staged`` the runtime moves each stage's models to the device and back, timing the moves as stages of their
own. Nothing here chains the stages itself.

After the engine's run, in the same repeat, sampling alone is run again with two-pass guidance
(``mmaudio.sampling.sample(batched_cfg=False)``) and, with a reference checkout, by the reference network and
sampler, both on the features the engine encoded and the noise the engine drew (``initial_noise(seed, samples)``
for the one prompt row). Interleaving the three keeps them under the same machine load. Every ``sampling`` time
includes the conditions projection (the input projections of both guidance branches): the engine's sampling
stage does it, and the other two runs are timed the same way.
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from bench import components
from bench.library import ReferenceModules, library_module
from bench.measure import RunRecorder, StageRecord, memory_probe, process_peak_rss, summarize
from bench.quality import compare
from bench.reference import build_reference_network, reference_sample

ENCODE_STAGES = ("frames", "clip", "sync", "windows", "text")  # the engine's encode stages (one pass or windows)
ENGINE_STAGES = (*ENCODE_STAGES, "sampling", "decoding")
FEATURE_MODES = ("all", "sync", "none", "random")
PROMPT = "the sound of the benchmark clip"
MAX_SOURCE_BYTES = 8 * 1024**3  # the synthetic IMAGE batch is refused beyond this (long clips: lower the size)


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
    features: str = "all"  # all | sync | none (text only) | random (no encoding: random features)
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
    lowvram: bool = False  # with staged: the flow network streams its blocks to the device while it samples
    log: Callable[[str], None] = print

    @property
    def dtype(self) -> torch.dtype:
        return _parse_dtype(self.dtype_name)

    @property
    def decoder_dtype(self) -> torch.dtype:
        return _parse_dtype(self.decoder_dtype_name)

    @property
    def compile_name(self) -> str:
        """The engine's compile switch: off, compile, or cuda_graphs (mode reduce-overhead)."""
        if not self.compile:
            return "off"
        return "cuda_graphs" if self.compile_mode == "reduce-overhead" else "compile"


def _parse_dtype(name: str) -> torch.dtype:
    return library_module("weights.precision").parse_dtype(name)


# ---- the runtime the engine is driven with -------------------------------------------------------------------
class BenchRuntime:
    """The engine's Runtime for the benchmark: every stage is timed on ``recorder`` and every Euler step marked.

    - ``stage(name, models, memory)``: the stage ``name`` on the recorder. With ``staged`` the models wait on the
      CPU; they are moved to their device before the stage and back after it (also after an error), each move
      timed as ``load_<stage>`` / ``unload_<stage>``, as ``engine.DirectRuntime(offload=True)`` moves them.
    - ``plan(units)``: frame choice and resizing runs between the engine's plan and its last ``frames`` report
      without a ``stage()`` of its own; that span is recorded as the stage ``frames`` (one pass only: with
      windows the frames are read inside the ``windows`` stage).
    - ``progress("sampling", done, total)``: a step ends when a whole step's units are done (one per window).
    - ``estimates``: the activation bytes the engine asked for, per stage (what a memory manager is told).
    """

    def __init__(self, recorder: RunRecorder, *, steps: int, staged: bool = False, lowvram: bool = False) -> None:
        self.recorder = recorder
        self.steps = steps
        self.staged = staged or lowvram
        self.lowvram = lowvram  # the network and CLIP stream their blocks (engine.DirectRuntime(low_vram=True))
        self.estimates: dict[str, int] = {}
        self.units: dict[str, int] = {}
        self._frames: StageRecord | None = None

    @contextlib.contextmanager
    def stage(self, name: str, models: Sequence[Any], memory_required: int = 0) -> Iterator[None]:
        self.close()
        self.estimates[name] = max(self.estimates.get(name, 0), int(memory_required))
        streaming = library_module("model.block_streaming")
        streamed = [p for p in models if self.lowvram and streaming.can_stream(p.module)]
        moved = [p for p in models if self.staged and not any(p is s for s in streamed)]
        if moved:
            with self.recorder.stage(f"load_{name}"):
                for placed in moved:
                    placed.module.to(placed.device)
        try:
            with self.recorder.stage(name), contextlib.ExitStack() as stack:
                for placed in streamed:  # its transfers overlap its compute: timed as part of the stage
                    stack.enter_context(streaming.stream_blocks(placed.module, placed.device))
                yield
        finally:
            if moved:
                with self.recorder.stage(f"unload_{name}"):
                    for placed in moved:
                        placed.module.to("cpu")
                    if any(placed.device.type == "cuda" for placed in moved):
                        torch.cuda.empty_cache()

    def plan(self, units: Mapping[str, int]) -> None:
        self.units.update(units)
        if units.get("frames") and "windows" not in units and not self.recorder.is_open(self._frames):
            self._frames = self.recorder.begin("frames")

    def progress(self, stage: str, done: int, total: int) -> None:
        if stage == "frames" and done >= total:
            self.close()
        elif stage == "sampling":
            per_step = max(1, total // self.steps)
            if done % per_step == 0:
                self.recorder.step()

    def close(self) -> None:
        """End the ``frames`` span if it is still open (the next stage, or the run, begins)."""
        if self.recorder.is_open(self._frames):
            self.recorder.end(self._frames)
        self._frames = None


# ---- building ----------------------------------------------------------------------------------------------
@dataclass
class Workload:
    """The built models (each placed on the device it computes on), the visual source and the fixed inputs."""

    spec: components.VariantSpec
    state_dict: dict[str, torch.Tensor]
    network: Any  # engine.Placed[MMAudioNetwork]
    decoder: Any  # engine.Placed[AudioDecoder]
    features: Any | None  # engine.FeatureModels (None with --features random)
    source: Any | None  # engine.VisualSource (None: text only, or random features)
    prompts: Any  # engine.PromptPlan
    prepared: Any | None  # engine.EncodedConditions of random features (--features random)
    seed: int
    batch: int
    conditions: Any | None = None  # what the engine encoded (set by the first run)
    outputs: dict[tuple[str, str, int], torch.Tensor] = field(default_factory=dict)  # (dtype, guidance, steps)
    _x0: torch.Tensor | None = None

    @property
    def windowed(self) -> bool:
        return self.conditions is not None and not self.conditions.windows.is_single

    @property
    def lengths(self) -> Any:
        """Sequence lengths of one window (the whole clip in one pass) in the network's mode."""
        plan = self.conditions.windows if self.conditions is not None else self.prepared.windows
        return library_module("model").SequenceLengths.for_duration(plan.window_duration, self.spec.mode)

    @property
    def x0(self) -> torch.Tensor:
        """The engine's initial noise for the one prompt row (sample k from seed + k, CPU), for the
        sampling-only runs of a single pass."""
        if self._x0 is None:
            self._x0 = library_module("sampling").initial_noise(self.seed, self.batch, self.lengths.latent_seq_len,
                                                                self.spec.network.latent_dim)
        return self._x0


def _random_conditions(spec: components.VariantSpec, settings: Settings, prompts: Any) -> Any:
    """Encoded conditions of random features of the real shapes (L2-normalised CLIP rows, unit-scale sync), one
    set per window, as the engine's encode stage would hand them to its sampling stage."""
    engine = library_module("engine")
    model = library_module("model")
    plan = engine.plan_windows(settings.duration, spec.mode)
    lengths = model.SequenceLengths.for_duration(plan.window_duration, spec.mode)
    count = plan.num_windows
    gen = torch.Generator().manual_seed(settings.seed + 100)
    cfg = spec.network
    clip_f = torch.randn(count, lengths.clip_seq_len, cfg.clip_dim, generator=gen)
    sync_f = torch.randn(count, lengths.sync_seq_len, cfg.sync_dim, generator=gen)
    text_f = torch.randn(1, cfg.text_seq_len, cfg.text_dim, generator=gen)
    return engine.EncodedConditions(
        windows=plan, clip_features=torch.nn.functional.normalize(clip_f, dim=-1), sync_features=sync_f,
        text_features=torch.nn.functional.normalize(text_f, dim=-1),
        text_index=torch.zeros(1, count, dtype=torch.long), negative_features=None,
        negative_index=torch.full((1, count), -1, dtype=torch.long), prompts=prompts, source="video",
        requested_duration=settings.duration)


def _synthetic_frames(settings: Settings, seed: int) -> torch.Tensor:
    """A ComfyUI IMAGE batch [N, H, W, 3] (float32 in [0, 1], on the CPU as ComfyUI holds it) covering the
    duration at the source frame rate."""
    count = math.ceil(settings.duration * settings.video_fps) + 1
    height, width = settings.video_size
    size = count * height * width * 3 * 4
    if size > MAX_SOURCE_BYTES:
        raise ValueError(
            f"the synthetic IMAGE batch of {settings.duration:g} s at {settings.video_fps:g} fps, {height}x{width}, "
            f"would take {size / 1024**3:.1f} GiB; lower --video-size or --video-fps, or use --features none")
    gen = torch.Generator().manual_seed(seed + 200)
    return torch.rand(count, height, width, 3, generator=gen)


def _feature_dtype(settings: Settings) -> torch.dtype:
    """CLIP and Synchformer weights: float32 on the CPU, the network's compute dtype on an accelerator."""
    if settings.device.type == "cpu":
        return torch.float32
    precision = library_module("weights.precision")
    return precision.compute_dtype_for(settings.dtype, settings.device)


def build_workload(name: str, settings: Settings) -> Workload:
    if settings.features not in FEATURE_MODES:
        raise ValueError(f"features: expected one of {', '.join(FEATURE_MODES)}, got {settings.features!r}")
    engine = library_module("engine")
    spec = components.variant_spec(name)
    device = settings.device
    prompts = engine.parse_prompts(PROMPT, "")
    state_dict = components.network_state_dict(spec, settings.seed)
    net = components.build_network(state_dict, settings.dtype, device)
    decoder = components.build_decoder(spec, settings.seed, device, settings.decoder_dtype)
    network = engine.Placed(net, device, net.compute_dtype)
    decoder_placed = engine.Placed(decoder, device, decoder.compute_dtype)
    features = source = prepared = None
    if settings.features == "random":
        prepared = _random_conditions(spec, settings, prompts)
    else:
        dtype = _feature_dtype(settings)
        fx = components.build_features(spec, settings.seed, device, dtype)
        features = engine.FeatureModels(engine.Placed(fx.clip, device, dtype),
                                        engine.Placed(fx.synchformer, device, dtype))
        if settings.features != "none":
            source = engine.VisualSource.from_images(_synthetic_frames(settings, settings.seed),
                                                     fps=settings.video_fps)
    if settings.staged:  # the models wait on the CPU; the runtime brings each stage's own to the device
        for module in (net, decoder, *(() if features is None else (features.clip.module,
                                                                     features.synchformer.module))):
            module.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return Workload(spec, state_dict, network, decoder_placed, features, source, prompts, prepared, settings.seed,
                    settings.batch)


# ---- one run of the engine ---------------------------------------------------------------------------------
@contextlib.contextmanager
def arithmetic(fast: bool) -> Iterator[None]:
    """Our library with its exact-but-reordered fast paths on, or off (the reference's order of operations):
    Winograd F(4, 3) convolutions on a CPU (entered by the engine's sampling stage) and adaLN computed once per
    distinct sync row."""
    winograd = library_module("model.winograd")
    conditions = library_module("model.conditions")
    threshold = conditions.DISTINCT_ROWS_WORTHWHILE
    with winograd.use_winograd(fast):
        if not fast:
            conditions.DISTINCT_ROWS_WORTHWHILE = 0.0
        try:
            yield
        finally:
            conditions.DISTINCT_ROWS_WORTHWHILE = threshold


@dataclass
class EngineRun:
    stages: dict[str, dict[str, Any]]
    latents: torch.Tensor  # [B, frames, latent_dim] float32 CPU, as the decoder receives them
    conditions: Any
    estimates: dict[str, int]
    finite: bool | None  # the waveform is finite (None: not decoded)


def run_engine(work: Workload, settings: Settings, *, steps: int, conditions: Any = None, decode: bool = True,
               network: Any = None, fast: bool | None = None) -> EngineRun:
    """One generation by the engine, every stage on one clock inside ``end_to_end``.

    ``conditions`` given: the engine's encode stage is skipped (sampling alone, e.g. at other precisions);
    otherwise the engine encodes the workload's source and prompt (or, with --features random, the random
    conditions are handed to its sampling stage). ``network``: another placed network (not staged)."""
    engine = library_module("engine")
    recorder = RunRecorder(settings.device)
    runtime = BenchRuntime(recorder, steps=steps, staged=settings.staged and network is None,
                           lowvram=settings.lowvram and network is None)
    sampling_settings = engine.SamplingSettings(seed=settings.seed, steps=steps, cfg=settings.cfg,
                                                samples=settings.batch, compile=settings.compile_name)
    wave = None
    with arithmetic(settings.fast_paths if fast is None else fast), recorder.stage("end_to_end"):
        if conditions is None:
            conditions = work.prepared
        if conditions is None:
            conditions = engine.encode_conditions(work.features, work.source, work.prompts,
                                                  duration=settings.duration,
                                                  mask_away_clip=settings.features == "sync", runtime=runtime,
                                                  mode=work.spec.mode)
        latents = engine.sample_latents(network or work.network, conditions, sampling_settings, runtime)
        if decode:
            wave = engine.decode_audio(work.decoder, latents, runtime)
        runtime.close()
    finite = None if wave is None else bool(torch.isfinite(wave).all())
    if finite is False:
        settings.log(f"warning: {work.spec.name}: the decoded waveform is not finite")
    return EngineRun(recorder.results(), latents.latents.float(), conditions, runtime.estimates, finite)


# ---- sampling-only runs on the engine's inputs ---------------------------------------------------------------
def sampling_inputs(work: Workload) -> dict[str, torch.Tensor | None]:
    """The features the engine sampled with, for its one prompt row (None: the network's learned empty ones)."""
    cond = work.conditions
    return {"clip_f": None if cond.clip_features is None else cond.clip_features[:1],
            "sync_f": None if cond.sync_features is None else cond.sync_features[:1],
            "text_f": cond.text_features[cond.text_index[:, 0]]}


@contextlib.contextmanager
def _on_device(placed: Any, staged: bool) -> Iterator[None]:
    """With --staged, a model that waits on the CPU visits its device for an untimed sampling-only run."""
    if not staged:
        yield
        return
    placed.module.to(placed.device)
    try:
        yield
    finally:
        placed.module.to("cpu")


def run_two_pass(work: Workload, settings: Settings, *, steps: int, network: Any = None, fast: bool | None = None,
                 ) -> tuple[dict[str, dict[str, Any]], torch.Tensor]:
    """Sampling alone with two forward passes per step (``mmaudio.sampling.sample(batched_cfg=False)``), on
    the engine's features and noise, with the same fast paths the engine's sampling stage enters. The stage
    ``sampling`` includes the conditions projection, as the engine's does."""
    sampling = library_module("sampling")
    winograd = library_module("model.winograd")
    placed = network or work.network
    net, device, dtype = placed.module, placed.device, placed.dtype
    inputs = sampling_inputs(work)
    lengths = work.lengths
    recorder = RunRecorder(settings.device)
    staged = settings.staged and network is None
    with arithmetic(settings.fast_paths if fast is None else fast), torch.inference_mode(), \
            _on_device(placed, staged):
        net.update_seq_lengths(lengths.latent_seq_len, lengths.clip_seq_len, lengths.sync_seq_len)
        x0 = work.x0.to(device)
        with recorder.stage("sampling"):
            cond, empty = sampling.build_conditions(net, clip_f=inputs["clip_f"], sync_f=inputs["sync_f"],
                                                    text_f=inputs["text_f"], batch_size=settings.batch,
                                                    dtype=dtype, device=device)
            with winograd.fast_path_for(net, device, dtype):
                x1 = sampling.sample(net, x0, cond, empty if settings.cfg >= 1.0 else None, num_steps=steps,
                                     cfg_strength=settings.cfg, callback=lambda _k, _n, _x: recorder.step(),
                                     batched_cfg=False, compile=settings.compile_name)
            latents = net.unnormalize(x1.float()).cpu()
    return recorder.results(), latents


def _reference_features(work: Workload) -> dict[str, torch.Tensor]:
    """The engine's features for the reference, which takes tensors: the network's learned empty features
    (the same weights in both) where the engine used them."""
    net = work.network.module
    inputs = sampling_inputs(work)
    empty = {"clip_f": net.get_empty_clip_sequence, "sync_f": net.get_empty_sync_sequence}
    return {name: value if value is not None else empty[name](1, dtype=torch.float32, device=torch.device("cpu"))
            for name, value in inputs.items()}


def run_reference(work: Workload, settings: Settings, ref_net: torch.nn.Module, *, steps: int,
                  dtype: torch.dtype) -> tuple[dict[str, dict[str, Any]], torch.Tensor]:
    """The reference network and sampler on the engine's features and noise; its result un-normalised by our
    network's latent statistics (the same weights), to compare with the engine's latents."""
    recorder = RunRecorder(settings.device)
    features = _reference_features(work)
    parked = settings.device.type == "cuda"  # on a GPU it visits the device only for its own runs
    if parked:
        ref_net.to(settings.device)
    try:
        with torch.inference_mode():
            x1 = reference_sample(settings.reference, ref_net, work.x0.to(settings.device), features["clip_f"],
                                  features["sync_f"], features["text_f"], steps=steps, cfg=settings.cfg,
                                  dtype=dtype, recorder=recorder)
            latents = work.network.module.unnormalize(x1.float().cpu())
    finally:
        if parked:
            ref_net.to("cpu")
            torch.cuda.empty_cache()
    return recorder.results(), latents


# ---- aggregation -------------------------------------------------------------------------------------------
def _stage_summary(runs: list[dict[str, dict[str, Any]]], name: str) -> dict[str, Any] | None:
    present = [r[name] for r in runs if name in r]
    if not present:
        return None
    out = {"seconds": summarize([r["seconds"] for r in present]),
           "cpu_seconds": summarize([r["cpu_seconds"] for r in present]),
           "peak_bytes": max(r["peak_bytes"] for r in present),
           "peak_delta_bytes": max(r["peak_delta_bytes"] for r in present)}
    steps = [s for r in present for s in r["step_seconds"]]
    if steps:
        out["step_seconds"] = summarize(steps)
        out["step_seconds"].pop("runs")
        out["step_seconds"]["count"] = len(steps)
    return out


def _combined(runs: list[dict[str, dict[str, Any]]], names: Sequence[str],
              first_run: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    present = [n for n in names if n in runs[0]] if runs else []
    if not present:
        return None
    return {"seconds": summarize([sum(r[n]["seconds"] for n in present if n in r) for r in runs]),
            "stages": present,
            "peak_bytes": max(r[n]["peak_bytes"] for r in [*runs, first_run] for n in present if n in r),
            "peak_delta_bytes": max(r[n]["peak_delta_bytes"] for r in runs for n in present if n in r),
            "first_run_peak_delta_bytes": max(first_run[n]["peak_delta_bytes"] for n in present if n in first_run)}


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "seconds",
           stat: str = "median") -> float | None:
    if not a or not b or key not in a or key not in b:
        return None
    return a[key][stat] / b[key][stat]


def _stage_order(runs: list[dict[str, dict[str, Any]]]) -> list[str]:
    """Stage names in the order they ran (moves beside their stage), end_to_end last."""
    names = list(dict.fromkeys(n for r in runs for n in r if n != "end_to_end"))
    return [*names, "end_to_end"]


FEATURE_NOTES = {
    "random": "no feature extraction (--features random): random features of the real shapes, handed to the "
              "engine's sampling stage as encoded conditions",
    "none": "text-only conditions (--features none): no video, CLIP text only; the network's learned empty "
            "video features",
    "sync": "CLIP image features masked away (--features sync: the engine's mask_away_clip); Synchformer and CLIP "
            "text only",
}


# ---- the variant -------------------------------------------------------------------------------------------
def measure_variant(name: str, settings: Settings) -> dict[str, Any]:
    log = settings.log
    log(f"[{name}] building models with random weights ...")
    work = build_workload(name, settings)
    ref_name = settings.reference_dtype_name or settings.dtype_name
    ref_dtype = _parse_dtype(ref_name)
    ref_net = None
    reference_note = settings.reference_error

    # Two steps: the first call fills the network's per-device caches (rotary tables, timestep frequencies),
    # which torch.compile guards on, so a compiled network recompiles once at the second call.
    warm_steps = min(2, settings.steps)
    first_run: dict[str, dict[str, Any]] | None = None  # the cold run: memory not yet held by the allocator
    estimates: dict[str, int] = {}
    e2e_runs, two_pass_runs, ref_runs = [], [], []
    finite = []

    def engine_run(steps: int) -> EngineRun:
        nonlocal first_run, ref_net, reference_note
        run = run_engine(work, settings, steps=steps)
        first_run = first_run or run.stages
        estimates.update(run.estimates)
        finite.append(run.finite)
        if work.conditions is None:
            work.conditions = run.conditions
            if settings.reference is not None and ref_net is None and not reference_note:
                reference_note, ref_net = _reference_network(work, settings, ref_dtype)
        return run

    for _ in range(settings.warmup):
        log(f"[{name}] warm-up ({warm_steps} steps)")
        engine_run(warm_steps)
        if settings.two_pass and not work.windowed:
            run_two_pass(work, settings, steps=warm_steps)
        if ref_net is not None:
            run_reference(work, settings, ref_net, steps=warm_steps, dtype=ref_dtype)

    for i in range(settings.repeats):
        log(f"[{name}] repeat {i + 1}/{settings.repeats}: the engine end to end (batched guidance)")
        run = engine_run(settings.steps)
        e2e_runs.append(run.stages)
        work.outputs[(settings.dtype_name, "batched", settings.steps)] = run.latents
        if settings.two_pass and not work.windowed:
            log(f"[{name}] repeat {i + 1}/{settings.repeats}: sampling with two-pass guidance")
            result, latents = run_two_pass(work, settings, steps=settings.steps)
            two_pass_runs.append(result)
            work.outputs[(settings.dtype_name, "two_pass", settings.steps)] = latents
        if ref_net is not None:
            log(f"[{name}] repeat {i + 1}/{settings.repeats}: reference sampling (two-pass guidance)")
            result, latents = run_reference(work, settings, ref_net, steps=settings.steps, dtype=ref_dtype)
            ref_runs.append(result)
            work.outputs[("reference_" + ref_name, "two_pass", settings.steps)] = latents

    memory = memory_probe(settings.device)
    net = work.network.module
    decoder = work.decoder.module
    plan = work.conditions.windows
    lengths = work.lengths
    features = work.features
    out: dict[str, Any] = {
        "variant": name,
        "device": str(settings.device),
        "dtype": settings.dtype_name,
        "compute_dtype": str(work.network.dtype).removeprefix("torch."),
        "decoder_dtype": settings.decoder_dtype_name,
        "mode": work.spec.mode,
        "features": settings.features,
        "batch": settings.batch,
        "staged": settings.staged,
        "lowvram": settings.lowvram,
        "soundtrack_seconds": plan.duration,
        "windows": {"count": plan.num_windows, "plan": plan.describe(), "window_latents": lengths.latent_seq_len,
                    "total_latents": plan.total_latents if not plan.is_single else lengths.latent_seq_len},
        "sequence_lengths": {"latent": lengths.latent_seq_len, "clip": lengths.clip_seq_len,
                             "sync": lengths.sync_seq_len, "text": work.spec.network.text_seq_len},
        "parameters": {
            "network": components.parameter_count(net),
            "vae_decoder": components.parameter_count(decoder.vae),
            "vocoder": components.parameter_count(decoder.vocoder),
            "clip": components.parameter_count(features.clip.module if features else None),
            "synchformer": components.parameter_count(features.synchformer.module if features else None),
        },
        "network_weight_bytes": components.weight_bytes(net),
        "memory_measure": memory.describe(),
        "engine_memory_estimates": estimates,
        "waveform_finite": all(f is not False for f in finite),
        "timing_note": "sampling times include the conditions projection (input projections of both guidance "
                       "branches), for the engine's run, our two-pass run and the reference alike",
        "stages": {},
    }
    if settings.device.type == "cuda":
        out["host_rss_peak_bytes"] = process_peak_rss()
    stages = out["stages"]
    for stage in _stage_order(e2e_runs):
        summary = _stage_summary(e2e_runs, stage)
        if summary is not None:
            # Later runs reuse memory the allocator kept, so the cold run shows what a stage really needs.
            summary["first_run_peak_delta_bytes"] = (first_run.get(stage) or {}).get("peak_delta_bytes")
            stages[stage] = summary
    present = [n for n in stages if n != "end_to_end"]
    for combined, names in (("features", [n for n in ENCODE_STAGES if n in present]),
                            ("moves", [n for n in present if n.startswith(("load_", "unload_"))])):
        summary = _combined(e2e_runs, names, first_run)
        if summary is not None:
            stages[combined] = summary
    if settings.features in FEATURE_NOTES:
        out["features_note"] = FEATURE_NOTES[settings.features]

    if two_pass_runs:
        out["sampling_two_pass"] = _stage_summary(two_pass_runs, "sampling")
        out["ratios"] = {"batched_over_two_pass": _ratio(stages["sampling"], out["sampling_two_pass"])}
    if ref_runs:
        ref = {"conditions": _stage_summary(ref_runs, "conditions"),
               "sampling": _stage_summary(ref_runs, "sampling"),
               "dtype": ref_name,
               "stubbed_modules": list(settings.reference.stubbed),
               "path": str(settings.reference.root)}
        ours = work.outputs[(settings.dtype_name, "batched", settings.steps)]
        theirs = work.outputs[("reference_" + ref_name, "two_pass", settings.steps)]
        ref["latent_agreement"] = compare(ours, theirs)
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

    if work.windowed:
        out["single_pass_note"] = ("the two-pass timing, the reference comparison and the quality guard are "
                                   "single-pass measurements: not run for a windowed soundtrack")
    elif settings.quality:
        out["quality"] = quality_guard(work, settings, ref_net)
    ref_net = work = None  # the models go before the next variant is built
    gc.collect()
    if settings.device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _reference_network(work: Workload, settings: Settings, dtype: torch.dtype, *, timed: bool = True,
                       ) -> tuple[str | None, Any]:
    """(why not, None) or (None, the reference network) for this workload (compiled with --compile when it is
    the timed one)."""
    if work.windowed:
        return "the reference generates in one pass; a windowed soundtrack is not compared", None
    if dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        return "the reference has no fp8 path; not compared", None
    ref_net = build_reference_network(settings.reference, work.spec, work.state_dict, work.lengths,
                                      settings.device, dtype)
    if settings.compile and timed:
        ref_net.predict_flow = torch.compile(ref_net.predict_flow, mode=settings.compile_mode, dynamic=False)
    if settings.device.type == "cuda":
        ref_net.to("cpu")  # parked between its runs, so it never counts in our peak memory
        torch.cuda.empty_cache()
    return None, ref_net


# ---- quality guard -----------------------------------------------------------------------------------------
def _network_of(work: Workload, settings: Settings, dtype_name: str) -> tuple[Any, bool]:
    """(placed network of ``dtype_name``, whether it is the workload's own)."""
    if dtype_name == settings.dtype_name:
        return work.network, True
    engine = library_module("engine")
    net = components.build_network(work.state_dict, _parse_dtype(dtype_name), settings.device)
    return engine.Placed(net, settings.device, net.compute_dtype), False


def _sampled(work: Workload, settings: Settings, dtype_name: str, guidance: str, steps: int,
             ref_net: torch.nn.Module | None = None) -> torch.Tensor:
    """Final latents of one setting, from the timing runs when they made them, else from a new run: batched
    guidance through the engine's sampling stage, two-pass guidance through ``mmaudio.sampling``."""
    key = (dtype_name, guidance, steps)
    if key in work.outputs:
        return work.outputs[key]
    if dtype_name.startswith("reference_"):
        _, latents = run_reference(work, settings, ref_net, steps=steps, dtype=_parse_dtype(dtype_name[10:]))
    else:
        placed, own = _network_of(work, settings, dtype_name)
        network = None if own else placed
        if guidance == "batched":
            latents = run_engine(work, settings, steps=steps, conditions=work.conditions, decode=False,
                                 network=network).latents
        else:
            _, latents = run_two_pass(work, settings, steps=steps, network=network,
                                      fast=False if guidance == "two_pass_plain" else None)
        del placed
    work.outputs[key] = latents
    return latents


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
    for label, dtype_name, guidance in rows:
        latents = _sampled(work, settings, dtype_name, guidance, steps)
        results.append({"setting": label, "dtype": dtype_name, "guidance": guidance, **compare(latents, baseline)})
    if settings.reference is not None:
        # The reference at each precision, on the same weights (cast as its demo casts them: everything,
        # including t and the timestep frequencies; it has no fp8 path).
        for dtype_name in dict.fromkeys(("fp32", ref_name, *settings.quality_dtypes)):
            if dtype_name not in ("fp32", "bf16", "fp16"):
                continue
            if dtype_name == ref_name and ref_net is not None:
                net = ref_net
            else:
                _, net = _reference_network(work, settings, _parse_dtype(dtype_name), timed=False)
            latents = _sampled(work, settings, f"reference_{dtype_name}", "two_pass", steps, net)
            results.append({"setting": f"reference {dtype_name} (two-pass)", "dtype": dtype_name,
                            "guidance": "two_pass", **compare(latents, baseline)})
    fast = "Winograd convolutions and distinct-row adaLN" if settings.device.type == "cpu" else "distinct-row adaLN"
    return {"baseline": "ours, fp32 weights, two-pass guidance, fast paths off", "steps": steps,
            "fast_paths": fast if settings.fast_paths else "off",
            "metric_on": "final latents, un-normalised (what the decoder receives)",
            "rows": results}
