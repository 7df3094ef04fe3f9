"""The engine on a CUDA device (issue 15), with small random-weight models.

Every stage (conditions from IMAGE frames, sampling plain / compiled / with CUDA graphs, decoding) in every
precision (fp32, fp16, bf16, fp8 weights); the same seed gives the float32 CPU run's latents and audio within the
precision's tolerance; nothing of ours is left on the device after a run, an error or a cancel; the low-VRAM mode
(the network streamed block by block) gives the resident run's audio at a lower peak.

Where they run: on CUDA when a device is there (``bench/gpu_check.sh`` collects this module by its skip mark).
Without one they are skipped, unless ``MMAUDIO_CUDA_TESTS_ON_CPU=1``: then the very same code runs with the device
"cpu" (a dry run of the plumbing), skipping only the assertions about what stays on the device (CUDA's memory
counters; on the CPU the run's own results are CPU tensors too) and the ones that CUDA graphs were used. On the CPU
the precision policy (``mmaudio.weights.plan_precision``) computes fp8 weights in float32 (there is no half
precision the CPU computes well), and the compile modes run Inductor's CPU backend (CUDA graphs do not apply
there). Every measured distance, peak and count goes into the junit XML as a property (see ``close``).

Tolerances: relative L2 over the whole tensor against the float32 CPU run of the same models, seed and input.
Each stage is compared on equal inputs (the sampler given the CPU's conditions, the decoder given the CPU's
latents), so one stage's rounding does not count against the next; the whole chain from the frames has its own,
looser bound (random tiny networks amplify what comes in). "Measured" is the CPU dry run (fp16 and bf16 computed
in that dtype there, fp8 weights computed in float32); the device runs other kernels (flash attention, cuBLAS)
and computes fp8 weights in bf16, hence bounds several times those:

==========  ===============  ==============  ===============  ===============  =================================
precision   features         latents         waveform         whole chain      why
==========  ===============  ==============  ===============  ===============  =================================
fp32        1e-4 (0)         1e-4 (0)        1e-4 (0)         1e-3 (0)         TF32 off: only the order of sums
fp16        0.01 (1.1e-3)    0.05 (1.6e-3)   0.05 (7e-4)      0.05 (2.6e-3)    10-bit mantissa
bf16        0.08 (2.0e-2)    0.15 (1.4e-2)   0.15 (6e-3)      0.25 (2.6e-2)    7-bit mantissa
fp8_e4m3fn  0.25 (8.7e-2)    0.3 (9.9e-2)    0.35 (0.13)      0.6 (0.28)       3-bit weights (up to 6 % each)
==========  ===============  ==============  ===============  ===============  =================================

(measured in brackets; fp8's features bound is Synchformer's: CLIP keeps the automatic precision with fp8, so its
features are held to bf16's.) A test checks every bound against the distance between other inputs' outputs
(another seed: latents 1.25, waveform 1.23 apart; other frames and prompts: features 0.27 to 0.66 apart), so a
wrong draw or a broken stage still fails. For those distances to mean something, three of the tiny models are
changed (see ``files``): without it the waveform and the CLIP image features hardly depend on their input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.util
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from mmaudio.model.compiled import compiled_flow
from mmaudio.weights import plan_precision, preferred_half_dtype
from tests.comfy_stub import tiny_weights
from tests.parity.cases import rel_l2

try:
    from mmaudio import engine
except ModuleNotFoundError as error:  # a device image may lack PyAV (bench/gpu_check.py installs it from wheels)
    if error.name != "av":
        raise
    pytest.skip("needs PyAV (av): mmaudio.engine imports it (bench/gpu_check.sh --wheels installs it)",
                allow_module_level=True)

ON_CPU_ENV = "MMAUDIO_CUDA_TESTS_ON_CPU"
HAS_CUDA = torch.cuda.is_available()
DRY_RUN = not HAS_CUDA and os.environ.get(ON_CPU_ENV) == "1"  # the same code with the device "cpu"

MISSING = [name for name in ("open_clip", "ftfy") if importlib.util.find_spec(name) is None]  # CLIP needs them

pytestmark = [
    pytest.mark.skipif(not (HAS_CUDA or DRY_RUN),
                       reason=f"needs a CUDA device ({ON_CPU_ENV}=1 runs the same code on the CPU)"),
    pytest.mark.skipif(bool(MISSING), reason=f"needs {' and '.join(MISSING)} for CLIP (bench/gpu_check.sh --wheels "
                       "installs them)"),
]

PRECISIONS = ("fp32", "fp16", "bf16", "fp8_e4m3fn")
FPS = 12
FRAMES = 12  # one second of frames
SEED = 3
SETTINGS = engine.SamplingSettings(seed=SEED, steps=2)
REQUEST = engine.GenerationRequest(prompt="rain on a tin roof", negative_prompt="music", sampling=SETTINGS)
STAGES = ("clip", "sync", "text", "sampling", "decoding")
FEATURES = ("clip_features", "sync_features", "text_features", "negative_features")
CLIP_SCALE, SYNC_SCALE = 0.5, 0.2  # the random weights' scale (see ``_rescaled``)


@dataclass(frozen=True)
class Tolerance:
    """Relative L2 allowed against the float32 CPU run (see the module docstring)."""

    features: float  # the conditions from the frames
    latents: float  # the sampler, given the CPU's conditions
    waveform: float  # the decoder, given the CPU's latents
    chain: float  # the waveform of the whole chain from the frames (the stages' roundings compound)


TOLERANCES = {
    "fp32": Tolerance(features=1e-4, latents=1e-4, waveform=1e-4, chain=1e-3),
    "fp16": Tolerance(features=0.01, latents=0.05, waveform=0.05, chain=0.05),
    "bf16": Tolerance(features=0.08, latents=0.15, waveform=0.15, chain=0.25),
    "fp8_e4m3fn": Tolerance(features=0.25, latents=0.3, waveform=0.35, chain=0.6),
}


def _feature_tolerance(precision: str, name: str) -> float:
    """CLIP keeps the automatic precision when fp8 is asked (its plain layers cannot cast 8-bit weights: bf16 on
    CUDA, float32 on the CPU), so its features are held to bf16's tolerance then; Synchformer's to fp8's."""
    if precision == "fp8_e4m3fn" and name != "sync_features":
        return TOLERANCES["bf16"].features
    return TOLERANCES[precision].features


COMPILED_PRECISION = "bf16"  # what the GPU targets run; compiled vs plain in it: CPU dry run 1.2e-2
COMPILED_TOLERANCE = 0.1
# The same computation twice on one device (a repeat, the low-VRAM mode against the resident models): the same
# kernels on the same values, so bit-identical in practice; within float32 rounding, or one half-precision
# rounding of a few values, to stay robust to a kernel choice that depends on where a tensor sits.
SAME_DEVICE_TOLERANCE = {"fp32": 1e-6, "fp16": 1e-3, "bf16": 1e-3, "fp8_e4m3fn": 1e-3}


# ---- fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["cuda" if HAS_CUDA else "cpu"])
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(scope="module", autouse=True)
def _settings() -> Iterator[None]:
    """TF32 off (the fp32 tolerance assumes true float32 matmuls and convolutions on the device). On the CPU dry
    run, one thread: on a busy machine two OpenMP threads on two cores spin at every barrier (measured 10x
    slower)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_num_threads()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if DRY_RUN:
        torch.set_num_threads(1)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_num_threads(saved[2])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> engine.ComponentFiles:
    """tests/comfy_stub/tiny_weights.py's models, with three changes so that what a model is given shows in its
    output (else comparing outputs says little): the vocoder without biases, CLIP and Synchformer with random
    weights of a larger scale (see ``_zero_biases`` and ``_rescaled``)."""
    folder = tmp_path_factory.mktemp("cuda-weights")
    names = tiny_weights.write_models(folder)
    _zero_biases(folder / names.vocoder)
    _rescaled(folder / names.clip, CLIP_SCALE, seed=5)
    _rescaled(folder / names.synchformer, SYNC_SCALE, seed=4)
    return engine.ComponentFiles(**{kind: folder / getattr(names, kind)
                                    for kind in ("network", "vae", "vocoder", "clip", "synchformer")})


def _zero_biases(path: Path) -> None:
    """The random tiny vocoder's biases add up to a fixed waveform (-0.6 of DC) that drowns what its input
    changes (two different latents decode to waveforms 2e-4 apart); without them its output follows its input
    (two latents: 1.3 apart)."""
    state = load_file(str(path))
    save_file({k: torch.zeros_like(v) if k.endswith("bias") else v for k, v in state.items()}, str(path))


def _rescaled(path: Path, scale: float, seed: int) -> None:
    """The file's weights drawn again at ``scale`` (norm weights around 1), in its dtype. At tiny_weights' 0.02
    the learned tokens dominate: two different frame sets give CLIP image features 6e-4 apart (below fp16's
    resolution), Synchformer features 0.08 apart; at CLIP 0.5, Synchformer 0.2: 0.27 and 0.66 apart."""
    state = load_file(str(path))
    drawn = tiny_weights._random_like(state, torch.Generator().manual_seed(seed), torch.float16, scale=scale)
    save_file({k: v.to(state[k].dtype) for k, v in drawn.items()}, str(path))


@pytest.fixture(scope="module")
def source() -> engine.VisualSource:
    """One second of random IMAGE frames [frames, H, W, C] in [0, 1] at 12 fps."""
    images = torch.rand(FRAMES, 48, 64, 3, generator=torch.Generator().manual_seed(0))
    return engine.VisualSource.from_images(images, fps=FPS)


@dataclass(frozen=True)
class Reference:
    """The float32 CPU run: conditions from the frames, latents, their decoding. And how far apart other inputs
    land: another seed's latents and their decoding, other frames' and another prompt's conditions."""

    conditions: engine.EncodedConditions
    latents: torch.Tensor
    waveform: torch.Tensor
    other_seed_latents: torch.Tensor
    other_seed_waveform: torch.Tensor
    other_conditions: engine.EncodedConditions


@pytest.fixture(scope="module")
def reference(files: engine.ComponentFiles, source: engine.VisualSource) -> Reference:
    models = engine.load_models(files, device="cpu", precision="fp32")
    runtime = engine.DirectRuntime("cpu")
    conditions, latents, waveform = _chain(models, source, runtime)
    other = engine.sample_latents(models.network, conditions, dataclasses.replace(SETTINGS, seed=SEED + 1), runtime)
    other_waveform = engine.decode_audio(models.decoder, other, runtime)
    images = torch.rand(FRAMES, 48, 64, 3, generator=torch.Generator().manual_seed(1))
    other_conditions = engine.encode_conditions(
        models.features, engine.VisualSource.from_images(images, fps=FPS),
        engine.parse_prompts("a dog barks twice", "wind"), duration=None, mask_away_clip=False, runtime=runtime,
        mode=models.mode)
    return Reference(conditions, latents.latents, waveform, other.latents, other_waveform, other_conditions)


@pytest.fixture(scope="module")
def resident(files: engine.ComponentFiles, device: torch.device) -> Iterator[Callable[[str], engine.LoadedModels]]:
    """Models loaded on the device in a precision, each loaded once for the module."""
    cache: dict[str, engine.LoadedModels] = {}

    def get(precision: str) -> engine.LoadedModels:
        if precision not in cache:
            cache[precision] = engine.load_models(files, device=device, precision=precision)
        return cache[precision]

    yield get
    cache.clear()
    _settle(device)


# ---- helpers -------------------------------------------------------------------------------------------------
def _chain(models: engine.LoadedModels, source: engine.VisualSource, runtime: engine.Runtime,
           settings: engine.SamplingSettings = SETTINGS,
           ) -> tuple[engine.EncodedConditions, engine.AudioLatents, torch.Tensor]:
    """What :func:`engine.generate` does (encode, sample, decode), keeping the latents."""
    prompts = engine.parse_prompts(REQUEST.prompt, REQUEST.negative_prompt)
    conditions = engine.encode_conditions(models.features, source, prompts, duration=None, mask_away_clip=False,
                                          runtime=runtime, mode=models.mode)
    latents = engine.sample_latents(models.network, conditions, settings, runtime)
    return conditions, latents, engine.decode_audio(models.decoder, latents, runtime)


def _all_models(models: engine.LoadedModels) -> list[engine.Placed]:
    return [models.network, models.features.clip, models.features.synchformer, models.decoder]


def _devices(module: torch.nn.Module) -> set[str]:
    return {t.device.type for t in [*module.parameters(), *module.buffers()]}


class InjectedInterruptError(Exception):
    """Stands for a host's cancel that is an ordinary exception (ComfyUI's InterruptProcessingException)."""


class Recorder:
    """A runtime around a :class:`engine.DirectRuntime` that notes on which devices each stage's models are while
    it runs and every progress report; with ``fail_at`` it raises ``fail`` at that stage's first report (inside
    the stage: an error of a model, or a cancel as ComfyUI's interrupt or Ctrl-C raise it)."""

    def __init__(self, inner: engine.DirectRuntime, fail_at: str | None = None,
                 fail: type[BaseException] = RuntimeError) -> None:
        self.inner = inner
        self.fail_at = fail_at
        self.fail = fail
        self.placement: dict[str, list[tuple[str, torch.device, set[str]]]] = {}
        self.reports: list[tuple[str, int, int]] = []

    @contextlib.contextmanager
    def stage(self, name: str, models: Sequence[engine.Placed], memory_required: int = 0) -> Iterator[None]:
        with self.inner.stage(name, models, memory_required):
            self.placement[name] = [(type(p.module).__name__, p.device, _devices(p.module)) for p in models]
            yield

    def plan(self, units: Mapping[str, int]) -> None:
        self.inner.plan(units)

    def progress(self, stage: str, done: int, total: int) -> None:
        self.reports.append((stage, done, total))
        if stage == self.fail_at:
            raise self.fail(f"injected at {stage} {done}/{total}")
        self.inner.progress(stage, done, total)


def _settle(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def _warm_up_libraries(device: torch.device) -> None:
    """cuBLAS and cuBLASLt keep a workspace per stream from their first call, allocated through PyTorch's caching
    allocator (it counts in ``memory_allocated``): have them made before a baseline is taken."""
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = torch.randn(2, 32, 64, device=device, dtype=dtype)
        w = torch.randn(64, 64, device=device, dtype=dtype)
        F.linear(x, w, w[0])
        F.linear(x, w)
        torch.bmm(x, x.transpose(1, 2))
        F.scaled_dot_product_attention(x[:, None], x[:, None], x[:, None])
        F.conv1d(x, torch.randn(16, 32, 3, device=device, dtype=dtype), padding=1)
        F.conv_transpose1d(x, torch.randn(32, 8, 4, device=device, dtype=dtype), stride=2)
        F.conv2d(torch.randn(1, 3, 28, 28, device=device, dtype=dtype),
                 torch.randn(8, 3, 14, 14, device=device, dtype=dtype), stride=14)
    del x, w
    _settle(device)


class Ledger:
    """What a run leaves on the device: the live device tensors that did not exist before (found through the
    garbage collector: they say what was kept) and, on CUDA, ``memory_allocated`` against the level before (no
    such counter on the CPU: 0 there, and the CPU's new tensors include the run's results, so only CUDA asserts)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.before = 0
        self._known: list[torch.Tensor] = []  # kept alive so that their ids are not reused

    def _allocated(self) -> int:
        return torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else 0

    def start(self) -> Ledger:
        self._known = []
        _settle(self.device)
        self._known = _device_tensors(self.device)
        self.before = self._allocated()
        return self

    def left(self) -> tuple[int, list[str]]:
        """(bytes allocated beyond the level before, descriptions of the new live device tensors)."""
        _settle(self.device)
        known = {id(t) for t in self._known}
        new = [f"{type(t).__name__} {tuple(t.shape)} {t.dtype}" for t in _device_tensors(self.device)
               if id(t) not in known]
        return self._allocated() - self.before, new


def _device_tensors(device: torch.device) -> list[torch.Tensor]:
    found = []
    with warnings.catch_warnings():  # isinstance touches deprecated module proxies (torch.distributed.reduce_op)
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            with contextlib.suppress(Exception):  # objects that fail isinstance or .device are not ours
                if isinstance(obj, torch.Tensor) and obj.device.type == device.type:
                    found.append(obj)
    return found


def _assert_nothing_left(ledger: Ledger, what: str) -> None:
    """On CUDA: the device holds exactly what it held before, no new tensor on it (skipped on the CPU dry run)."""
    grown, new = ledger.left()
    if ledger.device.type != "cuda":
        return
    assert not new, f"{what}: {len(new)} tensor(s) of ours left on the device: {new[:12]}"
    assert grown == 0, f"{what}: {grown} bytes more allocated on the device than before"


def _assert_offloaded(models: engine.LoadedModels) -> None:
    """Every weight of every model back on the CPU (offload), the network without streaming hooks."""
    for placed in _all_models(models):
        assert _devices(placed.module) == {"cpu"}, f"{type(placed.module).__name__} left on {_devices(placed.module)}"
    for module in models.network.module.modules():
        assert not module._forward_pre_hooks and not module._forward_hooks, f"hooks left on {type(module)}"


def _expect_failure(exception: type[BaseException], run: Callable[[], Any]) -> str:
    """Run, expecting ``exception``; only its message survives (its traceback would hold device tensors)."""
    try:
        run()
    except exception as error:
        return str(error)
    pytest.fail(f"expected {exception.__name__}")


def _expected_dtype(precision: str, device: torch.device, role: str) -> torch.dtype:
    return plan_precision(precision, role, preferred_half_dtype(device)).compute_dtype


Close = Callable[[str, torch.Tensor, torch.Tensor, float], None]


@pytest.fixture
def close(record_property: Callable[[str, Any], None]) -> Close:
    """``close(what, actual, expected, allowed)``: rel-L2 of actual against expected at most ``allowed``. Every
    figure goes into the junit XML (``<property name="rel_l2 what" value="..."/>``, with its bound), so the GPU
    run says how close each precision came, not only whether it passed."""

    def check(what: str, actual: torch.Tensor, expected: torch.Tensor, allowed: float) -> None:
        error = rel_l2(actual, expected)
        record_property(f"rel_l2 {what}", f"{error:.3e} (bound {allowed:g})")
        assert error <= allowed, f"{what}: rel-L2 {error:.3g} > {allowed:g}"

    return check


# ---- the reference itself ------------------------------------------------------------------------------------
def test_tolerances_tell_other_inputs_apart(reference: Reference, record_property) -> None:
    """Every tolerance is far below the distance between the outputs of other inputs (another seed; other frames
    and prompts), so the comparisons are not vacuous; the CPU run's outputs are finite and non-trivial."""
    latents_apart = rel_l2(reference.other_seed_latents, reference.latents)
    waveform_apart = rel_l2(reference.other_seed_waveform, reference.waveform)
    record_property("rel_l2 apart latents", f"{latents_apart:.3f}")
    record_property("rel_l2 apart waveform", f"{waveform_apart:.3f}")
    assert max([t.latents for t in TOLERANCES.values()] + [COMPILED_TOLERANCE]) < latents_apart / 3
    assert max(t.waveform for t in TOLERANCES.values()) < waveform_apart / 3
    assert max(t.chain for t in TOLERANCES.values()) < waveform_apart / 2
    for name in FEATURES:
        apart = rel_l2(getattr(reference.other_conditions, name), getattr(reference.conditions, name))
        record_property(f"rel_l2 apart {name}", f"{apart:.3f}")
        assert max(_feature_tolerance(p, name) for p in PRECISIONS) < apart / 2, (name, apart)
    for tensor in (reference.latents, reference.waveform):
        assert bool(torch.isfinite(tensor).all()) and float(tensor.abs().max()) > 0


# ---- every stage in every precision --------------------------------------------------------------------------
@pytest.mark.parametrize("precision", PRECISIONS)
def test_frames_to_audio_on_the_device(device: torch.device, precision: str, resident, source: engine.VisualSource,
                                       reference: Reference, close: Close) -> None:
    """engine.generate from IMAGE frames with their fps: every stage's models compute on the device in the
    precision asked for; the conditions and the audio match the float32 CPU run within the precision's
    tolerance."""
    models = resident(precision)
    assert models.network.dtype == _expected_dtype(precision, device, "network")
    assert models.features.synchformer.dtype == _expected_dtype(precision, device, "synchformer")
    assert models.features.clip.dtype == _expected_dtype(precision, device, "clip")
    weight_dtypes = {p.dtype for p in models.network.module.parameters()}
    if precision == "fp8_e4m3fn":
        assert torch.float8_e4m3fn in weight_dtypes
    else:
        assert torch.float8_e4m3fn not in weight_dtypes

    runtime = Recorder(engine.DirectRuntime(device))
    result = engine.generate(models, source, REQUEST, runtime)

    assert set(STAGES) <= runtime.placement.keys()
    for stage, placed in runtime.placement.items():
        for name, placed_device, devices in placed:
            assert placed_device.type == device.type and devices == {device.type}, (stage, name, devices)
    reported = {stage for stage, _, _ in runtime.reports}
    assert {"frames", *STAGES} <= reported
    assert [r for r in runtime.reports if r[0] == "sampling"] == [("sampling", k, SETTINGS.steps)
                                                                   for k in range(1, SETTINGS.steps + 1)]

    tolerance = TOLERANCES[precision]
    conditions = result.conditions
    assert conditions.source == "video" and conditions.clip is not None and conditions.clip.fps == FPS
    for name in FEATURES:
        got, want = getattr(conditions, name), getattr(reference.conditions, name)
        assert got.device.type == "cpu" and got.dtype == torch.float32 and got.shape == want.shape, name
        assert bool(torch.isfinite(got).all()), name
        close(name, got, want, _feature_tolerance(precision, name))

    waveform = result.waveform
    assert waveform.device.type == "cpu" and waveform.dtype == torch.float32
    assert waveform.shape == reference.waveform.shape and bool(torch.isfinite(waveform).all())
    assert result.seeds == (SEED,)
    close("waveform from the frames", waveform, reference.waveform, tolerance.chain)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_sampling_on_the_device(device: torch.device, precision: str, resident, reference: Reference,
                                close: Close) -> None:
    """The sampler alone, given the CPU run's conditions: the same seed gives the CPU's latents within the
    precision's tolerance, and the same latents again on a second run."""
    models = resident(precision)
    runtime = Recorder(engine.DirectRuntime(device))
    latents = engine.sample_latents(models.network, reference.conditions, SETTINGS, runtime)
    assert runtime.placement["sampling"][0][2] == {device.type}
    got = latents.latents
    assert got.device.type == "cpu" and got.dtype == torch.float32 and got.shape == reference.latents.shape
    assert bool(torch.isfinite(got).all()) and latents.seeds == (SEED,)
    close("latents", got, reference.latents, TOLERANCES[precision].latents)

    again = engine.sample_latents(models.network, reference.conditions, SETTINGS, engine.DirectRuntime(device))
    close("latents again", again.latents, got, SAME_DEVICE_TOLERANCE[precision])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_decoding_on_the_device(device: torch.device, precision: str, resident, reference: Reference,
                                close: Close) -> None:
    """The decoder alone, given the CPU run's latents: the CPU's waveform within the precision's tolerance."""
    models = resident(precision)
    runtime = Recorder(engine.DirectRuntime(device))
    latents = engine.AudioLatents(latents=reference.latents, mode=models.mode,
                                  duration=reference.conditions.duration, seeds=(SEED,), prompts=("rain",))
    waveform = engine.decode_audio(models.decoder, latents, runtime)
    assert runtime.placement["decoding"][0][2] == {device.type}
    assert runtime.reports[-1] == ("decoding", 1, 1)
    assert waveform.device.type == "cpu" and waveform.dtype == torch.float32
    assert waveform.shape == reference.waveform.shape and bool(torch.isfinite(waveform).all())
    close("waveform", waveform, reference.waveform, TOLERANCES[precision].waveform)


# ---- nothing left on the device ------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", PRECISIONS)
def test_nothing_left_on_the_device_after_a_run(device: torch.device, precision: str, files: engine.ComponentFiles,
                                                source: engine.VisualSource, close: Close, record_property) -> None:
    """Models offloaded (they wait on the CPU, visit the device for their stage): after engine.generate the
    device holds exactly what it held before, from the very first run on."""
    models = engine.load_models(files, device=device, precision=precision, offload=True)
    _assert_offloaded(models)
    _warm_up_libraries(device)
    ledger = Ledger(device).start()
    runtime = Recorder(engine.DirectRuntime(device, offload=True))
    first = engine.generate(models, source, REQUEST, runtime)
    # The first run may leave a library's own workspace (not a tensor of ours), never a tensor.
    grown, new = ledger.left()
    record_property("bytes left by the first run", grown)
    if device.type == "cuda":
        assert not new, f"first run: tensor(s) of ours left on the device: {new[:12]}"
    for stage, placed in runtime.placement.items():  # each stage's models did visit the device
        for name, _, devices in placed:
            assert devices == {device.type}, (stage, name, devices)
    _assert_offloaded(models)

    ledger.start()
    second = engine.generate(models, source, REQUEST, engine.DirectRuntime(device, offload=True))
    _assert_nothing_left(ledger, f"a run ({precision}; the first run grew it by {grown} bytes)")
    _assert_offloaded(models)
    close("second run", second.waveform, first.waveform, SAME_DEVICE_TOLERANCE[precision])


@dataclass(frozen=True)
class Failure:
    stage: str
    exception: type[BaseException]
    low_vram: bool = False


FAILURES = {
    "error_in_synchformer": Failure("sync", RuntimeError),
    "cancel_in_clip": Failure("clip", InjectedInterruptError),  # a host's interrupt exception (ComfyUI)
    "cancel_while_sampling": Failure("sampling", KeyboardInterrupt),  # Ctrl-C
    "error_while_decoding": Failure("decoding", RuntimeError),
    "cancel_while_streaming_the_network": Failure("sampling", KeyboardInterrupt, low_vram=True),
}


FAILING_PRECISION = "bf16"


@pytest.fixture(scope="module")
def uninterrupted(files: engine.ComponentFiles, source: engine.VisualSource, device: torch.device,
                  ) -> Iterator[tuple[engine.LoadedModels, torch.Tensor]]:
    """Offloaded models shared by the failure cases, and their waveform from an uninterrupted run (which also
    has the libraries' workspaces made before any baseline is taken)."""
    models = engine.load_models(files, device=device, precision=FAILING_PRECISION, offload=True)
    _warm_up_libraries(device)
    expected = engine.generate(models, source, REQUEST, engine.DirectRuntime(device, offload=True))
    yield models, expected.waveform
    del models
    _settle(device)


@pytest.mark.parametrize("case", list(FAILURES))
def test_nothing_left_on_the_device_after_an_error_or_a_cancel(device: torch.device, case: str, uninterrupted,
                                                               source: engine.VisualSource, close: Close) -> None:
    """An exception raised inside a stage (a model's error, the host's interrupt, Ctrl-C) leaves the device as it
    was, the weights back on the CPU, and the models fit for the next run, which gives the uninterrupted audio."""
    failure = FAILURES[case]
    models, expected = uninterrupted

    def runtime(**kwargs: Any) -> Recorder:
        return Recorder(engine.DirectRuntime(device, offload=True, low_vram=failure.low_vram), **kwargs)

    ledger = Ledger(device).start()
    failing = runtime(fail_at=failure.stage, fail=failure.exception)
    message = _expect_failure(failure.exception, partial(engine.generate, models, source, REQUEST, failing))
    assert message.startswith(f"injected at {failure.stage} "), message  # at its first report, inside it
    assert failing.reports[-1][0] == failure.stage
    if failure.low_vram:
        assert "cpu" in failing.placement["sampling"][0][2]  # the blocks stayed on the CPU, streamed
    del failing
    _assert_nothing_left(ledger, case)
    _assert_offloaded(models)

    again = engine.generate(models, source, REQUEST, runtime())
    close("the next run", again.waveform, expected, SAME_DEVICE_TOLERANCE[FAILING_PRECISION])
    _assert_offloaded(models)


# ---- the low-VRAM mode ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp32", "fp8_e4m3fn"])
def test_low_vram_mode_gives_the_resident_audio_at_a_lower_peak(device: torch.device, precision: str,
                                                                files: engine.ComponentFiles,
                                                                source: engine.VisualSource, close: Close,
                                                                record_property) -> None:
    """DirectRuntime(low_vram=True) with offloaded models (network and CLIP streamed): the resident run's latents
    and audio, every weight back on the CPU after, and on CUDA a lower peak of allocated memory than the resident
    run's."""
    cuda = device.type == "cuda"
    _warm_up_libraries(device)

    _settle(device)
    base = torch.cuda.memory_allocated(device) if cuda else 0
    models = engine.load_models(files, device=device, precision=precision)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    _, expected_latents, expected_wave = _chain(models, source, engine.DirectRuntime(device))
    resident_peak = torch.cuda.max_memory_allocated(device) - base if cuda else 0
    del models
    _settle(device)

    base = torch.cuda.memory_allocated(device) if cuda else 0
    models = engine.load_models(files, device=device, precision=precision, offload=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    runtime = Recorder(engine.DirectRuntime(device, low_vram=True))
    _, latents, wave = _chain(models, source, runtime)
    streamed_peak = torch.cuda.max_memory_allocated(device) - base if cuda else 0

    tolerance = SAME_DEVICE_TOLERANCE[precision]
    close("latents", latents.latents, expected_latents.latents, tolerance)
    close("waveform", wave, expected_wave, tolerance)
    record_property("bit-identical", bool(torch.equal(latents.latents, expected_latents.latents)
                                          and torch.equal(wave, expected_wave)))
    record_property("peak bytes resident", resident_peak)
    record_property("peak bytes low-VRAM", streamed_peak)
    # The network's and CLIP's blocks stayed in CPU memory (only copies visited the device).
    for stage in ("sampling", "clip", "text"):
        assert "cpu" in runtime.placement[stage][0][2], (stage, runtime.placement[stage])
    for stage in ("sync", "decoding"):  # the other stages' models visited whole
        for name, _, devices in runtime.placement[stage]:
            assert devices == {device.type}, (stage, name, devices)
    _assert_offloaded(models)
    if cuda:
        assert streamed_peak < resident_peak, f"low-VRAM peak {streamed_peak} B >= resident peak {resident_peak} B"


# ---- compiled sampling ---------------------------------------------------------------------------------------
@pytest.fixture
def compiled_network(resident) -> Iterator[engine.LoadedModels]:
    """The resident models of the compiled precision; their compiled forwards (and Dynamo's caches, CUDA graph
    pools included) are dropped afterwards."""
    models = resident(COMPILED_PRECISION)
    yield models
    models.network.module.__dict__.pop("_compiled_flows", None)
    torch._dynamo.reset()


@pytest.mark.parametrize("mode", ["compile", "cuda_graphs"])
def test_compiled_sampling_on_the_device(device: torch.device, mode: str, compiled_network: engine.LoadedModels,
                                         reference: Reference, close: Close, record_property) -> None:
    """SamplingSettings(compile=...) samples through torch.compile (on CUDA it must really compile: no fallback),
    the latents within the precision's tolerance of the plain forward's; a second generation reuses the compiled
    forward (with CUDA graphs: replays the recorded graphs) and gives the same latents."""
    models = compiled_network
    settings = dataclasses.replace(SETTINGS, steps=3)  # 3 forwards a run: CUDA graphs warm up, record, replay
    plain = engine.sample_latents(models.network, reference.conditions, settings, engine.DirectRuntime(device))
    compiled = dataclasses.replace(settings, compile=mode)
    runtime = Recorder(engine.DirectRuntime(device))
    counters = torch._dynamo.utils.counters
    skips = counters["inductor"]["cudagraph_skips"]
    first = engine.sample_latents(models.network, reference.conditions, compiled, runtime)
    graphs = counters["stats"]["unique_graphs"]
    second = engine.sample_latents(models.network, reference.conditions, compiled, engine.DirectRuntime(device))
    recompiled = counters["stats"]["unique_graphs"] - graphs
    skipped = counters["inductor"]["cudagraph_skips"] - skips
    record_property("graphs compiled again by the second generation", recompiled)
    assert recompiled == 0, f"the second generation compiled {recompiled} new graph(s) instead of reusing them"
    flow = compiled_flow(models.network.module, mode)
    record_property("compile failure", flow.failure)
    record_property("CUDA graph skips", skipped)
    if device.type == "cuda":
        assert flow.failure is None, f"torch.compile ({mode}) fell back to the plain forward: {flow.failure}"
        if mode == "cuda_graphs":
            assert skipped == 0, (f"Inductor skipped CUDA graphs {skipped} time(s): the mode ran without them "
                                  "(TORCH_LOGS=cudagraphs says why)")
    assert runtime.placement["sampling"][0][2] == {device.type}
    assert compiled_flow(models.network.module, mode) is flow  # kept and reused by the second generation
    for latents in (first, second):
        assert bool(torch.isfinite(latents.latents).all()) and latents.latents.shape == plain.latents.shape
    close(f"{mode} against the plain forward", first.latents, plain.latents, COMPILED_TOLERANCE)
    close(f"{mode} again", second.latents, first.latents, SAME_DEVICE_TOLERANCE[COMPILED_PRECISION])
