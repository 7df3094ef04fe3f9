"""BigVGAN generator hyperparameters, read from a hub-style ``config.json`` (extra training keys ignored)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

from ..modes import MODES

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

# The two vocoders MMAudio uses, by mode.
KNOWN_CONFIG_FILES: dict[str, str] = {
    "16k": "vocoder_bigvgan_v1_16k.json",
    "44k": "bigvgan_v2_44khz_128band_512x.json",
}


@dataclass(frozen=True)
class BigVGANConfig:
    """What the generator's structure depends on, plus its sample rate."""

    num_mels: int
    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    upsample_initial_channel: int
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    resblock: str = "1"
    activation: str = "snakebeta"
    snake_logscale: bool = True
    use_tanh_at_final: bool = True
    use_bias_at_final: bool = True
    sampling_rate: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BigVGANConfig:
        """From a BigVGAN ``config.json`` / yml mapping; training-only keys are ignored."""
        try:
            rate = data.get("sampling_rate")
            return cls(
                num_mels=int(data["num_mels"]),
                upsample_rates=tuple(int(u) for u in data["upsample_rates"]),
                upsample_kernel_sizes=tuple(int(k) for k in data["upsample_kernel_sizes"]),
                upsample_initial_channel=int(data["upsample_initial_channel"]),
                resblock_kernel_sizes=tuple(int(k) for k in data["resblock_kernel_sizes"]),
                resblock_dilation_sizes=tuple(tuple(int(d) for d in ds) for ds in data["resblock_dilation_sizes"]),
                resblock=str(data.get("resblock", "1")),
                activation=str(data.get("activation", "snakebeta")),
                snake_logscale=bool(data.get("snake_logscale", True)),
                use_tanh_at_final=bool(data.get("use_tanh_at_final", True)),
                use_bias_at_final=bool(data.get("use_bias_at_final", True)),
                sampling_rate=int(rate) if rate is not None else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a usable BigVGAN generator config: {exc!r}") from exc

    @classmethod
    def for_mode(cls, mode: str) -> BigVGANConfig:
        """The full-size config of the vocoder MMAudio pairs with ``mode`` ("16k" or "44k")."""
        if mode not in KNOWN_CONFIG_FILES:
            raise ValueError(f"unknown vocoder mode {mode!r}; expected '16k' or '44k'")
        return cls.from_dict(json.loads((CONFIG_DIR / KNOWN_CONFIG_FILES[mode]).read_text()))

    @property
    def hop_length(self) -> int:
        """Output samples per mel frame."""
        return prod(self.upsample_rates)

    @property
    def mode(self) -> str | None:
        """"16k" / "44k" when this vocoder fits the MMAudio VAE of that mode (mel bands and hop), else None."""
        for spec in MODES.values():
            if spec.num_mels == self.num_mels and spec.hop_length == self.hop_length:
                return spec.name
        return None

    @property
    def sample_rate(self) -> int | None:
        if self.sampling_rate is not None:
            return self.sampling_rate
        mode = self.mode
        return MODES[mode].sample_rate if mode else None

    def with_width(self, upsample_initial_channel: int) -> BigVGANConfig:
        """The same structure at another width (the test fixtures shrink only this)."""
        return BigVGANConfig(**{**self.__dict__, "upsample_initial_channel": upsample_initial_channel})
