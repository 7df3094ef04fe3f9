"""The mel-spectrogram VAE of MMAudio: a 1-D EDM2-style magnitude-preserving autoencoder.

Encoder: mel (B, data_dim, T) -> Gaussian over latents (B, embed_dim, T/2).
Decoder: latent (B, embed_dim, T) -> mel (B, data_dim, 2T), log10 mel at 16 kHz, natural-log mel at 44.1 kHz.
Module and key names follow the released checkpoints (``v1-16.pth``, ``v1-44.pth``) so they load strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch
from torch import nn

from ..errors import WrongCheckpointError
from ..modes import mode_named, mode_of_mels
from ..ops import resolve_ops
from .blocks import AttentionBlock, Downsample, ResnetBlock, Upsample, mp_conv
from .distribution import LatentDistribution
from .mp_layers import mp_normalized_weight, mp_silu


@dataclass(frozen=True)
class VAEConfig:
    """Hyperparameters; only the three widths differ between 16k and 44k (and the tiny test models)."""

    data_dim: int
    embed_dim: int
    hidden_dim: int
    ch_mult: tuple[int, ...] = (1, 2, 4)
    encoder_blocks_per_level: int = 2
    decoder_blocks_per_level: int = 3
    # Levels (counted from the finest) whose output the encoder halves in time; the decoder mirrors them.
    down_levels: tuple[int, ...] = (0,)
    kernel_size: int = 3
    clip_act: float = 256.0

    @property
    def mode(self) -> str | None:
        """"16k" or "44k" from the number of mel bands, None for a non-MMAudio width."""
        return mode_of_mels(self.data_dim)

    @classmethod
    def for_mode(cls, mode: str) -> VAEConfig:
        """The full-size configuration of ``v1-16.pth`` or ``v1-44.pth``."""
        spec = mode_named(mode)
        return cls(data_dim=spec.num_mels, embed_dim=spec.latent_dim, hidden_dim=spec.vae_hidden_dim)


class MidBlock(nn.Module):
    """Resnet, attention, resnet at the coarsest width."""

    def __init__(self, channels: int, ops: Any, kernel_size: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, ops, kernel_size)
        self.attn_1 = AttentionBlock(channels, ops)
        self.block_2 = ResnetBlock(channels, channels, ops, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class EncoderLevel(nn.Module):
    """Resnet blocks at one width, optionally followed by 2x downsampling."""

    def __init__(self, in_dim: int, out_dim: int, num_blocks: int, downsample: bool, ops: Any,
                 kernel_size: int) -> None:
        super().__init__()
        dims = [in_dim] + [out_dim] * num_blocks
        self.block = nn.ModuleList(ResnetBlock(a, b, ops, kernel_size) for a, b in pairwise(dims))
        self.downsample = Downsample(out_dim, ops) if downsample else None


class DecoderLevel(nn.Module):
    """Resnet blocks at one width, optionally followed by 2x upsampling."""

    def __init__(self, in_dim: int, out_dim: int, num_blocks: int, upsample: bool, ops: Any,
                 kernel_size: int) -> None:
        super().__init__()
        dims = [in_dim] + [out_dim] * num_blocks
        self.block = nn.ModuleList(ResnetBlock(a, b, ops, kernel_size) for a, b in pairwise(dims))
        self.upsample = Upsample(out_dim, ops) if upsample else None


class Encoder(nn.Module):
    """mel (normalized) -> moments (B, 2·embed_dim, T/2): mean and log-variance stacked on channels."""

    def __init__(self, config: VAEConfig, ops: Any) -> None:
        super().__init__()
        self.clip_act = config.clip_act
        k = config.kernel_size
        widths = [config.hidden_dim * m for m in config.ch_mult]
        self.conv_in = mp_conv(ops, config.data_dim, config.hidden_dim, k)
        in_dims = [config.hidden_dim, *widths[:-1]]
        self.down = nn.ModuleList(
            EncoderLevel(a, b, config.encoder_blocks_per_level, i in config.down_levels, ops, k)
            for i, (a, b) in enumerate(zip(in_dims, widths, strict=True))
        )
        self.mid = MidBlock(widths[-1], ops, k)
        self.conv_out = mp_conv(ops, widths[-1], 2 * config.embed_dim, k)
        # Output gain (stored as gain - 1); folded into conv_out's weight at load, then zeroed.
        self.learnable_gain = nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_attention(self.mid.attn_1(self.before_attention(x)))

    def before_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Everything up to the mid block's attention (convolutional: any stretch can be run with context)."""
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h).clamp(-self.clip_act, self.clip_act)
            if level.downsample is not None:
                h = level.downsample(h)
        return self.mid.block_1(h)

    def after_attention(self, h: torch.Tensor) -> torch.Tensor:
        """Everything after the mid block's attention (convolutional)."""
        h = self.mid.block_2(h).clamp(-self.clip_act, self.clip_act)
        return self.conv_out(mp_silu(h))


class Decoder(nn.Module):
    """latent (B, embed_dim, T) -> normalized mel (B, data_dim, 2T)."""

    def __init__(self, config: VAEConfig, ops: Any) -> None:
        super().__init__()
        self.clip_act = config.clip_act
        k = config.kernel_size
        widths = [config.hidden_dim * m for m in config.ch_mult]
        self.conv_in = mp_conv(ops, config.embed_dim, widths[-1], k)
        self.mid = MidBlock(widths[-1], ops, k)
        # up[i] works at widths[i]; it takes its input from the coarser level i+1 (or from mid).
        in_dims = [*widths[1:], widths[-1]]
        # The encoder halves after level i, so the decoder doubles after level i+1.
        self.up = nn.ModuleList(
            DecoderLevel(a, b, config.decoder_blocks_per_level, (i - 1) in config.down_levels, ops, k)
            for i, (a, b) in enumerate(zip(in_dims, widths, strict=True))
        )
        self.conv_out = mp_conv(ops, config.hidden_dim, config.data_dim, k)
        self.learnable_gain = nn.Parameter(torch.zeros([]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.after_attention(self.mid.attn_1(self.before_attention(z)))

    def before_attention(self, z: torch.Tensor) -> torch.Tensor:
        """conv_in and the mid block's first resnet (convolutional, at the latent rate)."""
        return self.mid.block_1(self.conv_in(z))

    def after_attention(self, h: torch.Tensor) -> torch.Tensor:
        """Everything after the mid block's attention (convolutional): latent rate -> normalized mel."""
        h = self.mid.block_2(h).clamp(-self.clip_act, self.clip_act)
        for level in reversed(self.up):
            for block in level.block:
                h = block(h).clamp(-self.clip_act, self.clip_act)
            if level.upsample is not None:
                h = level.upsample(h)
        return self.conv_out(mp_silu(h))


class VAE(nn.Module):
    """Encoder (optional), decoder and the per-band mel statistics ``data_mean``/``data_std``.

    Build it through :func:`mmaudio.vae.load_vae`, which loads a checkpoint and folds the weight normalization;
    the forward methods assume folded weights.
    """

    def __init__(self, config: VAEConfig, ops: Any | None = None, with_encoder: bool = True) -> None:
        super().__init__()
        ops = resolve_ops(ops)
        self.config = config
        self.register_buffer("data_mean", torch.zeros(1, config.data_dim, 1))
        self.register_buffer("data_std", torch.ones(1, config.data_dim, 1))
        self.encoder = Encoder(config, ops) if with_encoder else None
        self.decoder = Decoder(config, ops)
        self.weights_folded = False
        self.source: str | None = None  # file name, set by the loader

    @property
    def mode(self) -> str | None:
        return self.config.mode

    @property
    def latent_dim(self) -> int:
        return self.config.embed_dim

    @property
    def num_mels(self) -> int:
        return self.config.data_dim

    def require_folded(self) -> None:
        """Raise unless the weights were normalized at load (the forwards assume it)."""
        if not self.weights_folded:
            raise RuntimeError("VAE weights are raw: load the checkpoint with load_vae() or call fold_weights()")

    def require_encoder(self) -> Encoder:
        """The encoder, or :class:`WrongCheckpointError` for a decoder-only checkpoint."""
        self.require_folded()
        if self.encoder is None:
            raise WrongCheckpointError(
                f"{self.source or 'this VAE checkpoint'} holds no encoder weights (decoder only), so it cannot "
                "turn audio into latents; load the full v1-16.pth / v1-44.pth"
            )
        return self.encoder

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, embed_dim, T) -> mel (B, data_dim, 2T) in the data's log scale (unnormalized)."""
        self.require_folded()
        mel = self.decoder(z)
        return mel * self.data_std.to(mel) + self.data_mean.to(mel)

    def encode(self, mel: torch.Tensor) -> LatentDistribution:
        """Mel (B, data_dim, T) -> the posterior over latents, (B, embed_dim, T // 2) layout."""
        encoder = self.require_encoder()
        x = (mel - self.data_mean.to(mel)) / self.data_std.to(mel)
        return LatentDistribution.from_moments(encoder(x), dim=1)

    @torch.no_grad()
    def fold_weights(self, dtype: torch.dtype | None = None) -> None:
        """Replace every raw conv weight by its magnitude-preserving normalization, once, in float32.

        The output gains (``learnable_gain + 1``) are multiplied into the two ``conv_out`` weights and then set
        to zero, so the module stays self-consistent. ``dtype`` is the storage dtype of the result (default:
        each weight's own dtype). ``data_mean``/``data_std`` are kept in float32.
        """
        if self.weights_folded:
            return
        gains = {self.decoder.conv_out: self.decoder.learnable_gain}
        if self.encoder is not None:
            gains[self.encoder.conv_out] = self.encoder.learnable_gain
        for module in self.modules():
            if not isinstance(module, nn.Conv1d):
                continue
            weight = mp_normalized_weight(module.weight)
            gain = gains.get(module)
            if gain is not None:
                weight = weight * (gain.to(torch.float32) + 1)
            module.weight = nn.Parameter(weight.to(dtype or module.weight.dtype), requires_grad=False)
        # New zero tensors, not zero_(): the loaded tensors may be shared with the caller's state dict.
        self.decoder.learnable_gain = nn.Parameter(torch.zeros_like(self.decoder.learnable_gain), requires_grad=False)
        if self.encoder is not None:
            self.encoder.learnable_gain = nn.Parameter(torch.zeros_like(self.encoder.learnable_gain),
                                                       requires_grad=False)
        self.data_mean = self.data_mean.to(torch.float32)
        self.data_std = self.data_std.to(torch.float32)
        self.weights_folded = True
