"""Transformer blocks of the flow network (MM-DiT style): joint blocks over latent, CLIP and text tokens,
fused (single-stream) blocks over the latent tokens, and the final projection.

Module and parameter names follow the published checkpoints (``attn.qkv``, ``adaLN_modulation.1``, ...).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import apply_rotary
from .layers import HeadRMSNorm, SwiGLU, channel_last_conv1d, modulate

LAYERNORM_EPS = 1e-5
Rotary = tuple[torch.Tensor, torch.Tensor]  # float32 (cos, sin), each [L, head_dim / 2]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Unmasked softmax attention over [B, H, L, Dh] heads, returned as [B, L, H * Dh]."""
    # v is a strided view of the interleaved qkv output; fused SDPA kernels want contiguous heads.
    out = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())
    return out.transpose(1, 2).flatten(2)


class QKVProjection(nn.Module):
    """Fused q/k/v projection with per-head RMS norm on q and k and an optional rotary embedding.

    The output channels of ``qkv`` are laid out (head, head_dim, 3): channel (h * head_dim + d) * 3 + j holds
    q (j = 0), k (j = 1) or v (j = 2), as the published weights were trained.
    """

    def __init__(self, dim: int, num_heads: int, ops: Any) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = ops.Linear(dim, dim * 3, bias=True)
        self.q_norm = HeadRMSNorm(self.head_dim)
        self.k_norm = HeadRMSNorm(self.head_dim)

    def forward(self, x: torch.Tensor, rot: Rotary | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, length, _ = x.shape
        qkv = self.qkv(x).view(batch, length, self.num_heads, self.head_dim, 3)
        q, k, v = qkv.permute(4, 0, 2, 1, 3).unbind(0)  # each [B, H, L, Dh]
        q = self.q_norm(q)
        k = self.k_norm(k)
        if rot is not None:
            q = apply_rotary(q, *rot)
            k = apply_rotary(k, *rot)
        return q, k, v


class TokenCondition(NamedTuple):
    """A per-token condition [B, L, D] stored as its distinct rows, so each row is modulated once.

    The latent stream's condition is the sync features (upsampled to the latent length, and constant for the
    unconditional branch) plus a per-sample vector, so most of its rows repeat: 16 kHz audio has 250 latent
    tokens but only 192 sync tokens, and the empty video has a handful of distinct rows.
    """

    distinct: torch.Tensor  # [U, D]
    index: torch.Tensor  # [B, L] int64: the row of ``distinct`` each token holds


Condition = torch.Tensor | TokenCondition  # [B, 1 or L, D], or the same as distinct rows


def modulation_terms(modulation: nn.Module, c: Condition) -> torch.Tensor:
    """``modulation(c)`` as [B, 1 or L, k], computed once per distinct row for a :class:`TokenCondition`."""
    if isinstance(c, TokenCondition):
        terms = modulation(c.distinct)
        return terms.index_select(0, c.index.reshape(-1)).view(*c.index.shape, terms.shape[-1])
    return modulation(c)


class Modulation(NamedTuple):
    """The adaLN terms of one stream after its attention input has been modulated."""

    gate_msa: torch.Tensor | None
    shift_mlp: torch.Tensor | None
    scale_mlp: torch.Tensor | None
    gate_mlp: torch.Tensor | None


class StreamBlock(nn.Module):
    """One token stream of a block: adaLN-modulated attention input, then gated attention output and MLP.

    ``kernel_size`` 1 gives Linear layers (text stream), 3 gives channel-last convolutions (latent, CLIP,
    fused blocks). A ``pre_only`` stream only contributes keys and values: it has no output path.
    """

    def __init__(self, dim: int, num_heads: int, ops: Any, *, mlp_ratio: float = 4.0, pre_only: bool = False,
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.pre_only = pre_only
        self.norm1 = ops.LayerNorm(dim, elementwise_affine=False, eps=LAYERNORM_EPS)
        self.attn = QKVProjection(dim, num_heads, ops)
        if pre_only:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(dim, 2 * dim, bias=True))
            return
        if kernel_size == 1:
            self.linear1 = ops.Linear(dim, dim, bias=True)
        else:
            self.linear1 = channel_last_conv1d(ops, dim, dim, kernel_size, per_step=True)
        self.norm2 = ops.LayerNorm(dim, elementwise_affine=False, eps=LAYERNORM_EPS)
        self.ffn = SwiGLU(dim, int(dim * mlp_ratio), ops, kernel_size=kernel_size, per_step=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(dim, 6 * dim, bias=True))

    def pre_attention(self, x: torch.Tensor, c: Condition, rot: Rotary | None,
                      ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], Modulation]:
        """q, k, v of the modulated stream, and the terms post_attention needs. c: [B, 1 or L, D]."""
        terms = modulation_terms(self.adaLN_modulation, c)
        if self.pre_only:
            shift_msa, scale_msa = terms.chunk(2, dim=-1)
            mod = Modulation(None, None, None, None)
        else:
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = terms.chunk(6, dim=-1)
            mod = Modulation(gate_msa, shift_mlp, scale_mlp, gate_mlp)
        qkv = self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rot)
        return qkv, mod

    def post_attention(self, x: torch.Tensor, attn_out: torch.Tensor, mod: Modulation) -> torch.Tensor:
        if self.pre_only:
            return x
        x = x + self.linear1(attn_out) * mod.gate_msa
        return x + self.ffn(modulate(self.norm2(x), mod.shift_mlp, mod.scale_mlp)) * mod.gate_mlp

    def forward(self, x: torch.Tensor, c: Condition, rot: Rotary | None) -> torch.Tensor:
        """Single-stream (fused) block: self-attention over this stream only."""
        qkv, mod = self.pre_attention(x, c, rot)
        return self.post_attention(x, attention(*qkv), mod)


class JointBlock(nn.Module):
    """Latent, CLIP and text streams attending jointly: one softmax over [latent, clip, text] tokens.

    The latent stream is modulated per token (extended_c), the others by the global condition. In the last
    joint block the CLIP and text streams are ``pre_only``: their outputs are never used again.
    """

    def __init__(self, dim: int, num_heads: int, ops: Any, *, mlp_ratio: float = 4.0, pre_only: bool = False) -> None:
        super().__init__()
        self.pre_only = pre_only
        self.latent_block = StreamBlock(dim, num_heads, ops, mlp_ratio=mlp_ratio, kernel_size=3)
        self.clip_block = StreamBlock(dim, num_heads, ops, mlp_ratio=mlp_ratio, pre_only=pre_only, kernel_size=3)
        self.text_block = StreamBlock(dim, num_heads, ops, mlp_ratio=mlp_ratio, pre_only=pre_only, kernel_size=1)

    def forward(self, latent: torch.Tensor, clip_f: torch.Tensor, text_f: torch.Tensor, global_c: torch.Tensor,
                extended_c: Condition, latent_rot: Rotary, clip_rot: Rotary,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x_qkv, x_mod = self.latent_block.pre_attention(latent, extended_c, latent_rot)
        c_qkv, c_mod = self.clip_block.pre_attention(clip_f, global_c, clip_rot)
        t_qkv, t_mod = self.text_block.pre_attention(text_f, global_c, None)

        q, k, v = (torch.cat(parts, dim=2) for parts in zip(x_qkv, c_qkv, t_qkv, strict=True))
        out = attention(q, k, v)
        n_latent, n_clip = latent.shape[1], clip_f.shape[1]

        latent = self.latent_block.post_attention(latent, out[:, :n_latent], x_mod)
        if not self.pre_only:
            clip_f = self.clip_block.post_attention(clip_f, out[:, n_latent:n_latent + n_clip], c_mod)
            text_f = self.text_block.post_attention(text_f, out[:, n_latent + n_clip:], t_mod)
        return latent, clip_f, text_f


class FinalBlock(nn.Module):
    """adaLN (shift, scale) on a non-affine LayerNorm, then a kernel-7 conv down to the latent channels."""

    def __init__(self, dim: int, out_dim: int, ops: Any) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(dim, 2 * dim, bias=True))
        self.norm = ops.LayerNorm(dim, elementwise_affine=False, eps=LAYERNORM_EPS)
        self.conv = channel_last_conv1d(ops, dim, out_dim, 7)

    def forward(self, latent: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.conv(modulate(self.norm(latent), shift, scale))
