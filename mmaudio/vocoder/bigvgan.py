"""BigVGAN generator (Lee et al. 2023): mel (B, num_mels, frames) -> waveform (B, 1, frames·hop).

Covers both MMAudio vocoders: v1 16 kHz (``best_netG.pt``: tanh output, conv_post with bias) and v2 44.1 kHz
(``bigvgan_v2_44khz_128band_512x``: clamp output, conv_post without bias). Key names follow the checkpoints
after weight-norm fusion (``<conv>.weight`` instead of ``weight_g``/``weight_v``; see :mod:`.loader`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..ops import resolve_ops
from .antialias import AntiAliasedActivation, LowPassFilter1d, UpSample1d
from .config import BigVGANConfig
from .snake import make_snake


def same_padding(kernel_size: int, dilation: int) -> int:
    return (kernel_size * dilation - dilation) // 2


class AMPBlock1(nn.Module):
    """Anti-aliased multi-periodicity block: per dilation, act → dilated conv → act → conv, plus residual."""

    def __init__(self, config: BigVGANConfig, channels: int, kernel_size: int, dilations: tuple[int, ...],
                 ops: Any) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            ops.Conv1d(channels, channels, kernel_size, dilation=d, padding=same_padding(kernel_size, d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            ops.Conv1d(channels, channels, kernel_size, dilation=1, padding=same_padding(kernel_size, 1))
            for _ in dilations
        )
        self.activations = nn.ModuleList(
            AntiAliasedActivation(make_snake(config.activation, channels, config.snake_logscale))
            for _ in range(2 * len(dilations))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acts = list(self.activations)
        for conv1, conv2, act1, act2 in zip(self.convs1, self.convs2, acts[0::2], acts[1::2], strict=True):
            x = conv2(act2(conv1(act1(x)))) + x
        return x


class AMPBlock2(nn.Module):
    """The lighter variant: per dilation, act → dilated conv, plus residual."""

    def __init__(self, config: BigVGANConfig, channels: int, kernel_size: int, dilations: tuple[int, ...],
                 ops: Any) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            ops.Conv1d(channels, channels, kernel_size, dilation=d, padding=same_padding(kernel_size, d))
            for d in dilations
        )
        self.activations = nn.ModuleList(
            AntiAliasedActivation(make_snake(config.activation, channels, config.snake_logscale))
            for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, act in zip(self.convs, self.activations, strict=True):
            x = conv(act(x)) + x
        return x


class BigVGAN(nn.Module):
    """Transposed-conv upsampling stages, each followed by the mean of several AMP blocks."""

    def __init__(self, config: BigVGANConfig, ops: Any | None = None) -> None:
        super().__init__()
        ops = resolve_ops(ops)
        if config.resblock not in ("1", "2"):
            raise ValueError(f"unknown BigVGAN resblock type {config.resblock!r}; expected '1' or '2'")
        self.config = config
        self.source: str | None = None  # file name, set by the loader
        width = config.upsample_initial_channel
        self.conv_pre = ops.Conv1d(config.num_mels, width, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        block_class = AMPBlock1 if config.resblock == "1" else AMPBlock2
        channels = width
        stages = zip(config.upsample_rates, config.upsample_kernel_sizes, strict=True)
        kinds = list(zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes, strict=True))
        for i, (rate, kernel) in enumerate(stages):
            channels = width // 2 ** (i + 1)
            up = ops.ConvTranspose1d(width // 2**i, channels, kernel, stride=rate, padding=(kernel - rate) // 2)
            self.ups.append(nn.ModuleList([up]))
            for kernel_size, dilations in kinds:
                self.resblocks.append(block_class(config, channels, kernel_size, tuple(dilations), ops))
        self.activation_post = AntiAliasedActivation(make_snake(config.activation, channels, config.snake_logscale))
        self.conv_post = ops.Conv1d(channels, 1, 7, padding=3, bias=config.use_bias_at_final)

    @property
    def mode(self) -> str | None:
        return self.config.mode

    @property
    def sample_rate(self) -> int | None:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def reset_filters(self) -> None:
        """Recompute every anti-aliasing filter in float32 (they are also stored in the checkpoints)."""
        for module in self.modules():
            if isinstance(module, (UpSample1d, LowPassFilter1d)):
                module.reset_filter()

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)
        per_stage = len(self.config.resblock_kernel_sizes)
        for i, (up,) in enumerate(self.ups):
            x = up(x)
            blocks = self.resblocks[i * per_stage : (i + 1) * per_stage]
            total = blocks[0](x)
            for block in blocks[1:]:
                total = total + block(x)
            x = total / per_stage
        x = self.conv_post(self.activation_post(x))
        return torch.tanh(x) if self.config.use_tanh_at_final else x.clamp(-1.0, 1.0)

