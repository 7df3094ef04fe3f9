"""Decoding long latents in overlapping chunks: receptive fields (derived and measured), exactness against the
whole-clip decode, progress and cancellation, the plain path for short latents, and the memory estimate.

Exactness is judged on the comparison's own rounding scale: both the whole and the chunked float32 decodes are
compared with a float64 whole decode, and the chunked error must stay within a small factor of the whole one.
A chunking mistake (too little context, wrong padding at the clip's edges) moves samples by orders of magnitude
more than float32 rounding; :func:`test_too_little_context_is_caught` shows the check sees it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from itertools import pairwise

import pytest
import torch

from bench.measure import cpu_allocated_peak
from mmaudio.decoder import DEFAULT_CHUNK_FRAMES, AudioDecoder
from mmaudio.errors import InvalidInputError
from mmaudio.vae import VAE, VAEConfig, load_vae
from mmaudio.vae.chunked import AttentionSplit, split_evenly
from mmaudio.vocoder import BigVGAN, BigVGANConfig, load_vocoder
from mmaudio.vocoder import chunked as vocoder_chunked
from mmaudio.vocoder.chunked import vocoder_context_frames, vocoder_reach
from tests.test_decoder import make_decoder
from tests.test_vae import TINY, random_vae_state_dict
from tests.test_vocoder import random_vocoder_checkpoint

LATENT_FRAMES = 36
CHUNKS = (10, 17, 25)  # none divides 36: four, three and two chunks


@pytest.fixture(scope="module", params=["16k", "44k"])
def decoder(request: pytest.FixtureRequest) -> AudioDecoder:
    return make_decoder(request.param, seed=5)


def float64_copy(decoder: AudioDecoder) -> AudioDecoder:
    twin = copy.deepcopy(decoder).double()
    twin.compute_dtype = torch.float64
    return twin


def reference_waveform(decoder: AudioDecoder, latent: torch.Tensor) -> torch.Tensor:
    """The whole-clip decode in float64: the yardstick both float32 decodes are measured against."""
    twin = float64_copy(decoder)
    with torch.no_grad():
        return twin.vocoder(twin.decode_mel(latent.double()))


def errors(waveform: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(relative L2, max abs) error of a float32 result against the float64 reference."""
    diff = waveform.double() - reference
    return float(diff.norm() / reference.norm()), float(diff.abs().max())


def random_latent(decoder: AudioDecoder, frames: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, decoder.latent_dim, generator=torch.Generator().manual_seed(seed))


# ---- receptive fields ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "frames"), [("16k", 40), ("44k", 22)])
def test_published_vocoders_need_this_much_context(mode: str, frames: int) -> None:
    """Derived from kernel sizes, dilations, up-sampling rates and the anti-aliasing filters (structure only, so
    the full-size and the tiny test vocoders agree)."""
    with torch.device("meta"):
        full = BigVGAN(BigVGANConfig.for_mode(mode))
        tiny = BigVGAN(BigVGANConfig.for_mode(mode).with_width(64))
    assert vocoder_context_frames(full) == vocoder_context_frames(tiny) == frames
    reach = vocoder_reach(full)
    assert frames - 2 < min(reach.left, reach.right) <= max(reach.left, reach.right) <= frames


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_vocoder_receptive_field_measured(mode: str) -> None:
    """Perturbing one mel frame changes no output sample beyond the derived context; the gradient of one output
    sample (its exact dependency set) reaches within three frames of it, so the bound is also tight."""
    vocoder = make_decoder(mode).vocoder.double()
    hop, context = vocoder.hop_length, vocoder_context_frames(vocoder)
    frames = 2 * context + 6
    probe = frames // 2
    mel = torch.randn(1, vocoder.config.num_mels, frames, dtype=torch.float64,
                      generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        bumped = mel.clone()
        bumped[..., probe] += 1.0
        changed = (vocoder(bumped) != vocoder(mel)).nonzero()[:, -1]
    assert changed.numel() > 0
    assert changed.min() >= (probe - context) * hop and changed.max() < (probe + 1 + context) * hop

    mel.requires_grad_(True)
    out = vocoder(mel)
    sample = probe * hop + hop // 2
    assert out[0, 0, sample].abs() < 1  # not clipped, so its gradient is not cut off
    out[0, 0, sample].backward()
    reads = (mel.grad[0].abs().sum(0) != 0).nonzero()[:, 0]
    reach = max(probe - int(reads.min()), int(reads.max()) - probe)
    assert context - 3 <= reach <= context


def dependency_reach(fn: Callable[[torch.Tensor], torch.Tensor], channels: int, length: int, in_scale: int,
                     out_scale: int) -> int:
    """Latent frames between an output frame in the middle and the farthest input frame it depends on (from the
    gradient, in float64)."""
    x = torch.randn(1, channels, length * in_scale, dtype=torch.float64, requires_grad=True)
    centre = length // 2
    fn(x)[0, :, centre * out_scale].sum().backward()
    reads = (x.grad[0].abs().sum(0) != 0).nonzero()[:, 0]
    first, last = int(reads.min()) // in_scale, int(reads.max()) // in_scale
    return max(centre - first, last - centre)


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_vae_context_covers_the_measured_dependency(mode: str) -> None:
    """The convolutional parts around the attention read no farther than the derived reach (and at most one frame
    less: the bound rounds half frames up)."""
    vae = make_decoder(mode).vae.double()
    length = 60
    for split, channels in ((AttentionSplit.of_decoder(vae.decoder), vae.latent_dim),
                            (AttentionSplit.of_encoder(vae.encoder), vae.num_mels)):
        width = split.attention.qkv.in_channels
        before = dependency_reach(split.before, channels, length, split.in_scale, 1)
        after = dependency_reach(split.after, width, length, 1, split.out_scale)
        assert split.before_reach - 1 <= before <= split.before_reach
        assert split.after_reach - 1 <= after <= split.after_reach
    assert (AttentionSplit.of_decoder(vae.decoder).before_reach, AttentionSplit.of_decoder(vae.decoder).after_reach,
            AttentionSplit.of_encoder(vae.encoder).before_reach, AttentionSplit.of_encoder(vae.encoder).after_reach) \
        == (3, 19, 13, 3)


# ---- exactness -----------------------------------------------------------------------------------------------
def test_chunked_decode_equals_whole_decode(decoder: AudioDecoder) -> None:
    latent = random_latent(decoder, LATENT_FRAMES)
    reference = reference_waveform(decoder, latent)
    with torch.no_grad():
        whole = decoder.decode(latent, chunk_frames=LATENT_FRAMES)
    whole_rel, whole_max = errors(whole, reference)
    assert 0 < whole_rel < 1e-5  # float32 rounding, measured on this machine's own arithmetic
    for chunk in CHUNKS:
        with torch.no_grad():
            chunked = decoder.decode(latent, chunk_frames=chunk)
        assert chunked.shape == whole.shape == (2, 1, LATENT_FRAMES * decoder.samples_per_latent)
        rel, worst = errors(chunked, reference)
        # Everywhere, the clip's true edges included (the max covers every sample).
        assert rel <= 2 * whole_rel and worst <= 4 * whole_max, (chunk, rel, whole_rel, worst, whole_max)


def test_too_little_context_is_caught(decoder: AudioDecoder, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a quarter of the vocoder's context, chunk seams move samples far beyond the rounding scale. (Ten frames
    short would not show: the outermost frames of the receptive field weigh less than float32 rounding.)"""
    latent = random_latent(decoder, LATENT_FRAMES, batch=1)
    reference = reference_waveform(decoder, latent)
    with torch.no_grad():
        whole_rel, _ = errors(decoder.decode(latent, chunk_frames=LATENT_FRAMES), reference)
        short = vocoder_context_frames(decoder.vocoder) // 4
        monkeypatch.setattr(vocoder_chunked, "vocoder_context_frames", lambda _vocoder: short)
        rel, _ = errors(decoder.decode(latent, chunk_frames=CHUNKS[0]), reference)
    assert rel > 100 * whole_rel


def test_short_latent_takes_the_plain_path_bit_identically(decoder: AudioDecoder) -> None:
    """Up to one chunk, decode is exactly today's whole-clip path (the golden parity cases rely on it)."""
    latent = random_latent(decoder, 20)
    calls: list[tuple[int, int]] = []
    with torch.no_grad():
        plain = decoder.vocoder(decoder.vae.decode(latent.transpose(1, 2))).float()
        assert torch.equal(decoder.decode(latent, progress=lambda *a: calls.append(a)), plain)
        assert torch.equal(decoder.decode(latent, chunk_frames=20), plain)
    assert calls == [(1, 1)]
    assert decoder.chunk_frames == DEFAULT_CHUNK_FRAMES >= 345  # an 8 s 44.1 kHz clip is one chunk


def test_decode_mel_and_vocode_chunk_on_their_own(decoder: AudioDecoder) -> None:
    frames = 30
    latent = random_latent(decoder, frames, batch=1, seed=3)
    with torch.no_grad():
        mel = decoder.decode_mel(latent, chunk_frames=frames)
        mel_chunked = decoder.decode_mel(latent, chunk_frames=CHUNKS[0])
        wave = decoder.vocode(mel, chunk_frames=frames)
        wave_chunked = decoder.vocode(mel, chunk_frames=CHUNKS[0])
    assert mel_chunked.shape == mel.shape == (1, decoder.vae.num_mels, 2 * frames)
    scale = mel.abs().max()
    assert (mel_chunked - mel).abs().max() <= 1e-5 * scale  # float32 rounding of values of this size
    assert wave_chunked.dtype == torch.float32 and wave_chunked.shape == wave.shape
    assert (wave_chunked - wave).abs().max() <= 1e-5 * wave.abs().max()


# ---- progress, cancel, arguments -----------------------------------------------------------------------------
def test_progress_is_reported_per_chunk_and_can_cancel(decoder: AudioDecoder) -> None:
    latent = random_latent(decoder, LATENT_FRAMES, batch=1)
    chunks = len(split_evenly(LATENT_FRAMES, CHUNKS[2]))
    calls: list[tuple[int, int]] = []
    with torch.no_grad():
        decoder.decode(latent, chunk_frames=CHUNKS[2], progress=lambda *a: calls.append(a))
    total = 3 * chunks  # keys/values, VAE decode, vocoder
    assert calls == [(done, total) for done in range(1, total + 1)]

    class CancelledError(Exception):
        pass

    seen: list[int] = []

    def cancel_at_second(done: int, _total: int) -> None:
        seen.append(done)
        if done == 2:
            raise CancelledError

    with pytest.raises(CancelledError), torch.no_grad():
        decoder.decode(latent, chunk_frames=CHUNKS[2], progress=cancel_at_second)
    assert seen == [1, 2]


def test_default_chunks_on_a_cpu_vocode_in_shorter_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no chunk length asked for, a long clip's VAE runs in chunks of ``chunk_frames`` and, on a CPU, its
    vocoder in chunks of at most CPU_VOCODER_CHUNK_FRAMES (faster there); the bar counts both, and the result is
    the whole decode's within rounding. An explicit chunk length applies to both."""
    from mmaudio import decoder as decoder_module

    decoder = make_decoder("16k", seed=5)
    decoder.chunk_frames = 25
    monkeypatch.setattr(decoder_module, "CPU_VOCODER_CHUNK_FRAMES", 10)
    seen: list[int] = []
    original = vocoder_chunked.vocode_in_chunks

    def recording(vocoder: BigVGAN, mel: torch.Tensor, chunk: int, progress: Callable | None) -> torch.Tensor:
        seen.append(chunk)
        return original(vocoder, mel, chunk, progress)

    monkeypatch.setattr(decoder_module, "vocode_in_chunks", recording)
    latent = random_latent(decoder, LATENT_FRAMES, batch=1)
    calls: list[tuple[int, int]] = []
    with torch.no_grad():
        default = decoder.decode(latent, progress=lambda *a: calls.append(a))
        explicit = decoder.decode(latent, chunk_frames=25)
        whole = decoder.decode(latent, chunk_frames=LATENT_FRAMES)
    assert seen == [2 * 10, 2 * 25]  # mel frames per vocoder chunk: the CPU cap, then the asked-for length
    total = 2 * len(split_evenly(LATENT_FRAMES, 25)) + len(split_evenly(2 * LATENT_FRAMES, 2 * 10))
    assert calls == [(done, total) for done in range(1, total + 1)]
    for result in (default, explicit):
        assert (result - whole).abs().max() <= 1e-5 * whole.abs().max()


def test_bad_chunk_sizes_are_refused() -> None:
    decoder = make_decoder("16k")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InvalidInputError, match="chunk_frames"):
            decoder.decode(torch.zeros(1, 8, 20), chunk_frames=bad)
    with pytest.raises(InvalidInputError, match="num_latent_frames"):
        decoder.decode_memory(0)


def test_spans_cover_the_sequence_evenly() -> None:
    for length, chunk in ((50, 12), (50, 50), (7, 100), (1001, 64)):
        spans = split_evenly(length, chunk)
        assert spans[0].start == 0 and spans[-1].stop == length
        assert all(a.stop == b.start for a, b in pairwise(spans))
        sizes = {s.size for s in spans}
        assert max(sizes) <= chunk and max(sizes) - min(sizes) <= 1
        assert len(spans) == -(-length // chunk)


# ---- memory --------------------------------------------------------------------------------------------------
def measured_peak(fn: Callable[[], object]) -> int:
    """Peak bytes of CPU tensor memory allocated and not yet freed during ``fn`` (every allocation through
    PyTorch's CPU allocator, including the kernels' own buffers; bench.measure.cpu_allocated_peak)."""
    with cpu_allocated_peak() as allocated:
        fn()
    return allocated["peak"]


@pytest.fixture(scope="module")
def wide_decoder() -> AudioDecoder:
    """A 44.1 kHz decoder whose vocoder has a third of the published width: every stage keeps enough channels
    for the CPU kernels to store them unpadded, as at full size (the 64-wide test vocoder's 1-channel stage is
    padded several-fold, which the estimate does not model), and it still runs in seconds."""
    vae = load_vae(random_vae_state_dict(TINY["44k"], seed=7))
    vocoder = load_vocoder(random_vocoder_checkpoint(BigVGANConfig.for_mode("44k").with_width(512), seed=7))
    return AudioDecoder(vae, vocoder)


@pytest.mark.filterwarnings("ignore:Warning. Profiler clears events")
@pytest.mark.parametrize(("frames", "chunk"), [(16, 64), (48, 16)])
def test_decode_memory_estimate_matches_the_measured_peak(wide_decoder: AudioDecoder, frames: int,
                                                          chunk: int) -> None:
    """Whole path and chunked path: measured/estimate within [0.5, 2].

    The measurement counts what PyTorch allocates (tensors and kernel buffers), not the process's resident set,
    whose growth on a run this small is dominated by the allocator's caching and one-time kernel setup
    (bench/decode_memory.py compares the estimate with both at full size)."""
    decoder = wide_decoder
    latent = random_latent(decoder, frames, batch=1)
    with torch.inference_mode():
        decoder.decode(latent[:, :8], chunk_frames=chunk)  # one-time setup outside the measurement
        peak = measured_peak(lambda: decoder.decode(latent, chunk_frames=chunk))
    estimate = decoder.decode_memory(frames, chunk_frames=chunk)
    assert 0.5 <= peak / estimate <= 2.0, (peak, estimate)


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_decode_memory_is_bounded_by_the_chunk(mode: str) -> None:
    """Full size (built on the meta device: the estimate needs only shapes): 10 minutes in chunks need a small
    fraction of what decoding 10 minutes at once would, and little more than 1 minute in chunks."""
    with torch.device("meta"):
        vae = VAE(VAEConfig.for_mode(mode), with_encoder=False)
        vocoder = BigVGAN(BigVGANConfig.for_mode(mode))
    decoder = AudioDecoder(vae, vocoder)
    rate = decoder.sample_rate / decoder.samples_per_latent
    ten_minutes, one_minute = round(600 * rate), round(60 * rate)
    chunked = decoder.decode_memory(ten_minutes)
    assert chunked < decoder.decode_memory(ten_minutes, chunk_frames=ten_minutes) / 20
    # What grows with the clip is only the waveform, mel, keys and values (and attention scores per key).
    assert chunked - decoder.decode_memory(one_minute) < 2**30
    assert decoder.decode_memory(2, batch=2) > decoder.decode_memory(2)
