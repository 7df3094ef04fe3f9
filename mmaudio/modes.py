"""The two audio modes of MMAudio, 16 kHz and 44.1 kHz: every fact that follows from the mode, in one table.

A mode fixes the output sample rate, the mel front-end the VAE was trained on, the VAE's mel bands and latent
width, and the vocoder that turns those mels into sound. Networks, decoders, sequence lengths and messages all
read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidInputError


@dataclass(frozen=True)
class AudioMode:
    """What one mode is: rates, mel front-end, latent width, and the files a user needs for it."""

    name: str  # "16k" or "44k"
    words: str  # for messages: "16 kHz"
    sample_rate: int
    num_mels: int
    latent_dim: int  # VAE latent channels (the flow network's latent width)
    n_fft: int
    hop_length: int  # waveform samples per mel frame (and the vocoder's upsampling factor)
    mel_fmax: float
    mel_log: str  # "log10" or "ln": the log the VAE's mels are in
    vae_file: str
    vae_hidden_dim: int  # width of the published VAE
    vocoder_file: str
    vocoder_name: str  # for messages

    @property
    def samples_per_latent(self) -> int:
        """Waveform samples per latent frame: the VAE doubles the frame rate, the vocoder multiplies by hop."""
        return 2 * self.hop_length

    @property
    def latent_rate(self) -> float:
        """Latent frames per second."""
        return self.sample_rate / self.samples_per_latent


MODES: dict[str, AudioMode] = {
    "16k": AudioMode(
        name="16k", words="16 kHz", sample_rate=16000, num_mels=80, latent_dim=20, n_fft=1024, hop_length=256,
        mel_fmax=8000.0, mel_log="log10", vae_file="v1-16.pth", vae_hidden_dim=384, vocoder_file="best_netG.pt",
        vocoder_name="the BigVGAN v1 16 kHz vocoder (best_netG.pt)",
    ),
    "44k": AudioMode(
        name="44k", words="44.1 kHz", sample_rate=44100, num_mels=128, latent_dim=40, n_fft=2048, hop_length=512,
        mel_fmax=22050.0, mel_log="ln", vae_file="v1-44.pth", vae_hidden_dim=512,
        vocoder_file="bigvgan_generator.pt",
        vocoder_name="the BigVGAN v2 44.1 kHz vocoder (nvidia/bigvgan_v2_44khz_128band_512x)",
    ),
}


def mode_named(mode: str | int) -> AudioMode:
    """The mode from its name ("16k", "44k") or its sample rate (16000, 44100)."""
    if isinstance(mode, int) and not isinstance(mode, bool):
        for spec in MODES.values():
            if spec.sample_rate == mode:
                return spec
    elif isinstance(mode, str) and mode.strip().lower() in MODES:
        return MODES[mode.strip().lower()]
    raise InvalidInputError(f"unknown audio mode {mode!r}; expected '16k', '44k', 16000 or 44100")


def mode_words(mode: str | None) -> str:
    """"16 kHz" / "44.1 kHz" for a mode name; the name itself (or "unknown-rate") otherwise."""
    if mode in MODES:
        return MODES[mode].words
    return mode or "unknown-rate"


def mode_of_latent_dim(latent_dim: int) -> str | None:
    """The mode whose VAE makes ``latent_dim``-channel latents, or None."""
    return next((m.name for m in MODES.values() if m.latent_dim == latent_dim), None)


def mode_of_mels(num_mels: int, latent_dim: int | None = None) -> str | None:
    """The mode whose mel front-end has ``num_mels`` bands (and, when given, whose latents are that wide)."""
    for spec in MODES.values():
        if spec.num_mels == num_mels and (latent_dim is None or spec.latent_dim == latent_dim):
            return spec.name
    return None
