"""Audio in: ComfyUI AUDIO -> mono at the mode's rate -> mel -> VAE posterior, long clips encoded in chunks.

Resampling is checked by what band-limiting means (tones below the new Nyquist frequency keep their amplitude,
tones above it are removed); chunked encoding against a float64 whole-clip encode, on the comparison's own
rounding scale (as for decoding in tests/test_decoder_chunked.py).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from mmaudio.audio_input import (
    encode_audio,
    encode_audio_memory,
    fit_to_latent_frames,
    latent_frames_for_samples,
    prepare_audio,
    samples_for_latent_frames,
)
from mmaudio.decoder import AudioDecoder
from mmaudio.errors import InvalidInputError
from mmaudio.mel import MelConverter
from mmaudio.model.sequence_config import SequenceLengths
from mmaudio.modes import MODES
from mmaudio.vae.chunked import split_evenly
from tests.test_decoder import make_decoder
from tests.test_decoder_chunked import measured_peak

LATENT_FRAMES = 60
CHUNKS = (13, 25)


@pytest.fixture(scope="module", params=["16k", "44k"])
def decoder(request: pytest.FixtureRequest) -> AudioDecoder:
    return make_decoder(request.param, seed=11)


def tone(frequency: float, rate: int, seconds: float, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(round(rate * seconds), dtype=torch.float64) / rate
    return (amplitude * torch.sin(2 * math.pi * frequency * t)).to(torch.float32)


def amplitude(signal: torch.Tensor) -> float:
    """Peak amplitude of a steady tone, from the RMS of its middle half (away from the edges)."""
    middle = signal[..., signal.shape[-1] // 4 : 3 * signal.shape[-1] // 4].double()
    return float(math.sqrt(2.0) * middle.pow(2).mean().sqrt())


def noise(samples: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return 0.3 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


# ---- resampling and mono ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("rate", "mode"), [(48000, "16k"), (22050, "44k"), (32000, "44k"), (44100, "16k")])
def test_tones_below_the_new_nyquist_keep_their_amplitude(rate: int, mode: str) -> None:
    target = MODES[mode].sample_rate
    nyquist = min(rate, target) / 2
    for fraction in (0.1, 0.5, 0.75):
        out = prepare_audio(tone(fraction * nyquist, rate, 0.5)[None, None], rate, mode)
        assert abs(amplitude(out) - 0.5) < 0.005, (fraction, amplitude(out))


@pytest.mark.parametrize(("rate", "mode"), [(48000, "16k"), (44100, "16k"), (96000, "44k")])
def test_tones_above_the_new_nyquist_are_removed(rate: int, mode: str) -> None:
    """An alias of a tone above the new Nyquist frequency would fold back at full amplitude."""
    target = MODES[mode].sample_rate
    for fraction in (1.2, 1.6):
        out = prepare_audio(tone(fraction * target / 2, rate, 0.5)[None, None], rate, mode)
        assert amplitude(out) < 0.005, (fraction, amplitude(out))  # more than 40 dB down


def test_resampled_length_and_timing() -> None:
    """ceil(N · new / old) samples, and an impulse lands where its time says."""
    for rate, samples in ((48000, 48000), (48000, 1001), (22050, 777), (8000, 5)):
        impulse = torch.zeros(1, 1, samples)
        impulse[..., samples // 2] = 1.0
        out = prepare_audio(impulse, rate, "16k")
        assert out.shape == (1, -(-samples * 16000 // rate))
        if samples > 100:
            expected = samples // 2 * 16000 / rate
            assert abs(int(out[0].abs().argmax()) - expected) <= 1


def test_channels_are_averaged_to_mono() -> None:
    left, right = tone(440.0, 16000, 0.25), tone(1000.0, 16000, 0.25, amplitude=0.2)
    stereo = torch.stack([left, right])  # ComfyUI's [channels, samples] also works
    assert torch.equal(prepare_audio(stereo, 16000, "16k"), ((left + right) / 2)[None])
    # Resampling is linear: averaging before it equals resampling each channel and averaging after.
    batch = torch.stack([torch.stack([left, right]), torch.stack([right, left])])
    mono = prepare_audio(batch, 16000, "44k")
    each = [prepare_audio(channel[None, None], 16000, "44k") for channel in (left, right)]
    assert mono.shape == (2, 11025)
    assert torch.allclose(mono[0], (each[0][0] + each[1][0]) / 2, atol=1e-5 * float(mono.abs().max()))
    assert torch.allclose(mono[0], mono[1])


def test_six_channels_and_float64_are_accepted() -> None:
    audio = torch.randn(1, 6, 4800, dtype=torch.float64) * 0.1
    out = prepare_audio(audio, 48000, "16k")
    assert out.dtype == torch.float32 and out.shape == (1, 1600)


@pytest.mark.parametrize(("audio", "rate", "words"), [
    (torch.zeros(1, 1, 0), 16000, "empty"),
    (torch.zeros(1, 0, 100), 16000, "empty"),
    (torch.zeros(0, 1, 100), 16000, "empty"),
    (torch.tensor([[[0.1, float("nan"), 0.2]]]), 16000, "NaN or infinite"),
    (torch.tensor([[[0.1, float("inf"), 0.2]]]), 16000, "NaN or infinite"),
    (torch.zeros(1, 2, 100), 16000, "silent.*encoding silence gives nothing to keep"),
    (torch.stack([torch.ones(1, 100), torch.zeros(1, 100)]), 16000, r"item\(s\) \[1\] of 2 are silent"),
    (torch.ones(100), 16000, r"\[batch, channels, samples\]"),
    (torch.ones(1, 1, 1, 100), 16000, r"\[batch, channels, samples\]"),
    (torch.ones(1, 1, 100, dtype=torch.int16), 16000, "float samples"),
    ([0.1, 0.2], 16000, "waveform tensor"),
    (torch.ones(1, 1, 100), 0, "sample rate"),
    (torch.ones(1, 1, 100), -44100, "sample rate"),
    (torch.ones(1, 1, 100), 44100.5, "sample rate"),
    (torch.ones(1, 1, 100), "44100", "sample rate"),
    (torch.ones(1, 1, 100), True, "sample rate"),
])
def test_unusable_audio_is_refused_by_name(audio: object, rate: object, words: str) -> None:
    with pytest.raises(InvalidInputError, match=words) as info:
        prepare_audio(audio, rate, "16k")  # type: ignore[arg-type]
    assert "audio" in str(info.value)


def test_integral_float_sample_rate_is_accepted() -> None:
    assert prepare_audio(torch.ones(1, 1, 441) * 0.1, 44100.0, "44k").shape == (1, 441)


# ---- lengths ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_latent_frames_rule_and_the_sequence_lengths(mode: str) -> None:
    spec = MODES[mode]
    config = MelConverter.for_mode(mode).config
    for samples in (0, 1, spec.hop_length, 2 * spec.hop_length - 1, 2 * spec.hop_length, 12345, 352800):
        mel_frames = max(0, (samples + 2 * ((config.n_fft - config.hop_size) // 2) - config.n_fft)
                         // config.hop_size + 1)
        assert latent_frames_for_samples(samples, mode) == mel_frames // 2
    for frames in (1, 7, 250, 345):
        assert latent_frames_for_samples(samples_for_latent_frames(frames, mode), mode) == frames
        assert latent_frames_for_samples(samples_for_latent_frames(frames, mode) - 1, mode) == frames - 1
    for duration in (1.0, 2.5, 8.0, 10.0):
        lengths = SequenceLengths.for_duration(duration, mode)
        encoded = latent_frames_for_samples(round(duration * spec.sample_rate), mode)
        assert encoded in (lengths.latent_seq_len, lengths.latent_seq_len - 1)
        exact = duration * spec.sample_rate % spec.samples_per_latent == 0
        assert (encoded == lengths.latent_seq_len) == exact
        assert samples_for_latent_frames(lengths.latent_seq_len, mode) == lengths.num_audio_samples
    assert latent_frames_for_samples(8 * 16000, "16k") == 250 and latent_frames_for_samples(8 * 44100, "44k") == 344
    with pytest.raises(InvalidInputError):
        latent_frames_for_samples(-1, mode)


def test_padding_to_the_sequence_length_gives_exactly_its_frames() -> None:
    decoder = make_decoder("44k", seed=3)
    lengths = SequenceLengths.for_duration(1.0, "44k")
    clip = noise(44100, batch=1)
    assert latent_frames_for_samples(clip.shape[-1], "44k") == lengths.latent_seq_len - 1
    padded = fit_to_latent_frames(clip, lengths.latent_seq_len, "44k")
    assert padded.shape[-1] == lengths.num_audio_samples and torch.equal(padded[:, :44100], clip)
    with torch.no_grad():
        assert decoder.encode(padded).mean.shape[1] == lengths.latent_seq_len
    assert fit_to_latent_frames(clip, 10, "44k").shape[-1] == 10 * 1024


# ---- chunked encoding ------------------------------------------------------------------------------------------
def reference_posterior_mean(decoder: AudioDecoder, waveform: torch.Tensor) -> torch.Tensor:
    """The whole-clip encode in float64 (mel included): the yardstick for both float32 encodes."""
    twin = copy.deepcopy(decoder).double()
    converter = twin.mel
    pad = converter.padding
    x = torch.nn.functional.pad(waveform.double().clamp(-1, 1)[:, None], (pad, pad), mode="reflect")[:, 0]
    with torch.no_grad():
        mel = converter._log_mel(x)
        return twin.vae.encode(mel).mean.transpose(1, 2)


def encode_errors(mean: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    diff = mean.double() - reference
    return float(diff.norm() / reference.norm()), float(diff.abs().max())


def long_waveform(decoder: AudioDecoder, seed: int = 0) -> torch.Tensor:
    """LATENT_FRAMES latent frames plus an odd mel frame and a few samples (the encoder drops the odd frame)."""
    hop = decoder.samples_per_latent // 2
    return noise(LATENT_FRAMES * decoder.samples_per_latent + hop + 37, seed=seed)


def test_chunked_encode_equals_whole_encode(decoder: AudioDecoder) -> None:
    waveform = long_waveform(decoder)
    reference = reference_posterior_mean(decoder, waveform)
    with torch.no_grad():
        whole = decoder.encode(waveform, chunk_frames=LATENT_FRAMES)
    assert whole.mean.shape == (2, LATENT_FRAMES, decoder.latent_dim)
    whole_rel, whole_max = encode_errors(whole.mean, reference)
    assert 0 < whole_rel < 1e-5
    for chunk in CHUNKS:
        with torch.no_grad():
            chunked = decoder.encode(waveform, chunk_frames=chunk)
        rel, worst = encode_errors(chunked.mean, reference)
        assert rel <= 2 * whole_rel and worst <= 4 * whole_max, (chunk, rel, whole_rel, worst, whole_max)
        scale = whole.logvar.abs().max()
        assert (chunked.logvar - whole.logvar).abs().max() <= 1e-5 * scale


def test_short_clip_encodes_on_the_plain_path_bit_identically(decoder: AudioDecoder) -> None:
    """Up to one chunk, encode is exactly mel -> VAE.encode (the golden vae_encode cases rely on it)."""
    waveform = noise(20 * decoder.samples_per_latent + 5)
    calls: list[tuple[int, int]] = []
    with torch.no_grad():
        plain = decoder.vae.encode(decoder.mel(waveform))
        posterior = decoder.encode(waveform, progress=lambda *a: calls.append(a))
    assert torch.equal(posterior.mean, plain.mean.transpose(1, 2))
    assert torch.equal(posterior.logvar, plain.logvar.transpose(1, 2))
    assert calls == [(1, 1)]


def test_mel_frames_of_a_stretch_equal_the_whole_mel() -> None:
    for mode in ("16k", "44k"):
        converter = MelConverter.for_mode(mode)
        waveform = noise(40 * converter.config.hop_size + 77)
        whole = converter(waveform)
        frames = whole.shape[-1]
        for start, stop in ((0, frames), (0, 3), (5, 17), (frames - 4, frames), (frames - 1, frames)):
            part = converter.frames(waveform, start, stop)
            assert (part - whole[..., start:stop]).abs().max() <= 1e-5 * whole.abs().max()
        with pytest.raises(InvalidInputError, match="outside"):
            converter.frames(waveform, 0, frames + 1)


def test_encode_progress_and_cancel(decoder: AudioDecoder) -> None:
    waveform = long_waveform(decoder)[:1]
    chunk = CHUNKS[1]
    mel_frames = decoder.mel.config.num_frames(waveform.shape[-1])
    total = len(split_evenly(mel_frames, 2 * chunk)) + 2 * len(split_evenly(mel_frames // 2, chunk))
    calls: list[tuple[int, int]] = []
    with torch.no_grad():
        decoder.encode(waveform, chunk_frames=chunk, progress=lambda *a: calls.append(a))
    assert calls == [(done, total) for done in range(1, total + 1)]

    class StopError(Exception):
        pass

    def stop(done: int, _total: int) -> None:
        if done == total - 1:
            raise StopError

    with pytest.raises(StopError), torch.no_grad():
        decoder.encode(waveform, chunk_frames=chunk, progress=stop)


# ---- audio in, end to end --------------------------------------------------------------------------------------
def test_round_trip_length(decoder: AudioDecoder) -> None:
    """48 kHz stereo in -> latents -> audio of the latents' length, covering the clip to within one latent frame."""
    audio = torch.stack([tone(300.0, 48000, 0.6), tone(500.0, 48000, 0.6)])[None]
    posterior = encode_audio(decoder, audio, 48000, chunk_frames=7)
    resampled = -(-audio.shape[-1] * decoder.sample_rate // 48000)
    frames = latent_frames_for_samples(resampled, decoder.mode)
    assert posterior.mean.shape == (1, frames, decoder.latent_dim)
    with torch.no_grad():
        waveform = decoder.decode(posterior.mode())
    assert waveform.shape == (1, 1, frames * decoder.samples_per_latent)
    assert resampled - decoder.samples_per_latent < waveform.shape[-1] <= resampled


def test_too_short_audio_is_refused() -> None:
    decoder = make_decoder("16k")
    with pytest.raises(InvalidInputError, match="audio is too short to encode"):
        encode_audio(decoder, torch.ones(1, 1, 1000) * 0.1, 48000)  # 334 samples at 16 kHz < 512


# ---- memory ----------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Warning. Profiler clears events")
@pytest.mark.parametrize(("frames", "chunk"), [(60, 100), (300, 40)])
def test_encode_memory_estimate_matches_the_measured_peak(frames: int, chunk: int) -> None:
    """Whole path and chunked path: measured/estimate within [0.5, 2] (what PyTorch allocates; see
    tests/test_decoder_chunked.py)."""
    decoder = make_decoder("44k", seed=7)
    waveform = noise(frames * decoder.samples_per_latent + 700, batch=1)
    with torch.inference_mode():
        decoder.encode(waveform[:, :8000], chunk_frames=chunk)
        peak = measured_peak(lambda: decoder.encode(waveform, chunk_frames=chunk))
    estimate = decoder.encode_memory(waveform.shape[-1], chunk_frames=chunk)
    assert 0.5 <= peak / estimate <= 2.0, (peak, estimate)
    assert encode_audio_memory(decoder, waveform.shape[-1], 44100, chunk_frames=chunk) == estimate
    assert encode_audio_memory(decoder, 2 * waveform.shape[-1], 88200, chunk_frames=chunk) == estimate


def test_resampling_helper_feeds_blocks_without_changing_the_result() -> None:
    from mmaudio.media.audio import resample_band_limited

    samples = np.random.default_rng(0).standard_normal((1, 30011)).astype(np.float32)
    whole = resample_band_limited(samples, 48000, 44100)
    assert np.array_equal(resample_band_limited(samples, 48000, 44100, block=4096), whole)
    assert whole.shape == (1, -(-30011 * 44100 // 48000))
