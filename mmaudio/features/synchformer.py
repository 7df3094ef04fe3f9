"""Synchformer's visual encoder (MotionFormer): the source of MMAudio's 24-per-second sync features.

Only the visual branch of the published Synchformer is needed. Each 16-frame segment (25 fps, 224 px, values in
[-1, 1]) is cut into 2-frame x 16 px tubelets (8 x 14 x 14 tokens plus a CLS token), run through 12 divided
space-time blocks (attention over time, then over space, then an MLP; every patch attends within its own time
line or frame plus the CLS token, the CLS token attends to everything), normalised, and each of the 8 time steps is
pooled by a small pre-norm transformer layer with its own CLS token. A segment therefore yields 8 vectors of 768;
segments start every 8 frames.

Parameter names follow the checkpoint (``vfeat_extractor.`` stripped), so the published file, Kijai's safetensors
and fine-tunes load strictly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError, WrongCheckpointError
from ..ops import cast_like_input, default_ops, resolve_ops

PREFIX = "vfeat_extractor."
SEGMENT = 16
STEP = 8


def _cast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A bare parameter in the activations' dtype and device (layers cast their own weights)."""
    return cast_like_input(t, like)


@dataclass(frozen=True)
class MotionFormerConfig:
    """Hyperparameters of the published visual encoder (divided_224_16x4, temporal patch 2). ``depth`` and ``dim``
    are read off a checkpoint (12 blocks of width 768 in the published file; smaller in test files); heads are
    64 channels wide."""

    depth: int = 12
    dim: int = 768
    mlp_ratio = 4
    patch = 16
    tubelet = 2
    image_size = 224
    frames = SEGMENT
    eps = 1e-6

    @property
    def heads(self) -> int:
        return max(1, self.dim // 64)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def time_steps(self) -> int:
        return self.frames // self.tubelet


class DividedAttention(nn.Module):
    """Multi-head attention restricted to one axis (time or space) of the token grid, plus the CLS token.

    Patch tokens are grouped along the other axis: in ``time`` mode the tokens at one spatial position across
    the 8 time steps form a group, in ``space`` mode the 196 tokens of one time step. Every group also sees the CLS
    key/value; the CLS query attends to all tokens.
    """

    def __init__(self, dim: int, heads: int, ops: Any) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = ops.Linear(dim, dim * 3, bias=True)
        self.proj = ops.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor, mode: str, time_steps: int, patches: int) -> torch.Tensor:
        b, n, d = x.shape
        hd = d // self.heads
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4).unbind(0)  # (b, h, n, hd)
        q = q * hd**-0.5
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v, scale=1.0)

        def grouped(t: torch.Tensor) -> torch.Tensor:
            t = t[:, :, 1:].reshape(b, self.heads, time_steps, patches, hd)
            return t.transpose(2, 3) if mode == "time" else t  # (b, h, groups, group_len, hd)

        qg, kg, vg = grouped(q), grouped(k), grouped(v)
        groups = kg.shape[2]
        kg = torch.cat([k[:, :, None, :1].expand(-1, -1, groups, -1, -1), kg], dim=3)
        vg = torch.cat([v[:, :, None, :1].expand(-1, -1, groups, -1, -1), vg], dim=3)
        out = F.scaled_dot_product_attention(qg, kg, vg, scale=1.0)
        if mode == "time":
            out = out.transpose(2, 3)
        out = out.reshape(b, self.heads, time_steps * patches, hd)
        out = torch.cat([cls_out, out], dim=2).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden: int, ops: Any) -> None:
        super().__init__()
        self.fc1 = ops.Linear(dim, hidden, bias=True)
        self.fc2 = ops.Linear(hidden, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class DividedBlock(nn.Module):
    """Time attention (norm3), then space attention (norm1), then MLP (norm2), each a pre-norm residual."""

    def __init__(self, cfg: MotionFormerConfig, ops: Any) -> None:
        super().__init__()
        self.norm3 = ops.LayerNorm(cfg.dim, eps=cfg.eps)
        self.timeattn = DividedAttention(cfg.dim, cfg.heads, ops)
        self.norm1 = ops.LayerNorm(cfg.dim, eps=cfg.eps)
        self.attn = DividedAttention(cfg.dim, cfg.heads, ops)
        self.norm2 = ops.LayerNorm(cfg.dim, eps=cfg.eps)
        self.mlp = Mlp(cfg.dim, cfg.dim * cfg.mlp_ratio, ops)

    def forward(self, x: torch.Tensor, time_steps: int, patches: int) -> torch.Tensor:
        x = x + self.timeattn(self.norm3(x), "time", time_steps, patches)
        x = x + self.attn(self.norm1(x), "space", time_steps, patches)
        return x + self.mlp(self.norm2(x))


def tubelet_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv3d(x, weight, bias, stride=kernel)`` as a reshape into non-overlapping tubelets and one matmul.

    Apple's MPS backend has no 3-D convolution; a strided reshape and a matrix product run everywhere. Like the
    convolution, trailing frames or pixels that do not fill a whole tubelet are dropped. ``x`` is (B, C, T, H, W),
    ``weight`` (D, C, kt, kh, kw); returns (B, D, T // kt, H // kh, W // kw) as a view of a channel-last result.
    """
    if x.ndim != 5 or weight.ndim != 5 or x.shape[1] != weight.shape[1]:
        raise InvalidInputError(
            f"tubelet embedding: got input {tuple(x.shape)} and weight {tuple(weight.shape)}; expected input "
            f"(B, {weight.shape[1]}, T, H, W) for weight (D, C, kt, kh, kw)")
    kt, kh, kw = weight.shape[2:]
    t, h, w = x.shape[2] // kt, x.shape[3] // kh, x.shape[4] // kw
    if min(t, h, w) == 0:
        raise InvalidInputError(
            f"tubelet embedding: input {tuple(x.shape)} is smaller than one {kt}x{kh}x{kw} tubelet")
    x = x[:, :, :t * kt, :h * kh, :w * kw]
    tubelets = x.unflatten(4, (w, kw)).unflatten(3, (h, kh)).unflatten(2, (t, kt))  # (B, C, t, kt, h, kh, w, kw)
    rows = tubelets.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(x.shape[0], t, h, w, -1)  # (B, t, h, w, C*kt*kh*kw)
    return F.linear(rows, weight.reshape(weight.shape[0], -1), bias).permute(0, 4, 1, 2, 3)


class _TubeletConv:
    """Mixin for a Conv3d class whose stride equals its kernel: the convolution itself becomes
    :func:`tubelet_matmul`, while the layer's ``forward`` still casts (or patches) its weight and bias as it
    would for the convolution (``mmaudio.ops`` and ``comfy.ops`` layers all hand them to ``_conv_forward``)."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      *args: Any, **kwargs: Any) -> torch.Tensor:
        layer: Any = self
        tiled = (layer.stride == layer.kernel_size and layer.padding in ((0, 0, 0), "valid")
                 and layer.dilation == (1, 1, 1) and layer.groups == 1)
        if not tiled or any(value is not None for value in (*args, *kwargs.values())):
            raise ValueError(
                f"{type(self).__name__}: only non-overlapping tubelets (stride = kernel, no padding, dilation or "
                f"groups) are computed as a matmul; got stride {layer.stride}, kernel {layer.kernel_size}, padding "
                f"{layer.padding}, dilation {layer.dilation}, groups {layer.groups}, extra options {args} {kwargs}")
        return tubelet_matmul(input, weight, bias)


@functools.cache
def tubelet_conv_class(conv3d: type[nn.Conv3d]) -> type[nn.Conv3d]:
    """A subclass of ``conv3d`` (a plain, casting or ComfyUI Conv3d class) computing through
    :func:`tubelet_matmul`; its layers are still ``conv3d`` layers, so memory managers and weight loaders treat
    them as before."""
    return type(f"Tubelet{conv3d.__name__}", (_TubeletConv, conv3d), {"__module__": __name__})


class TubeletEmbed(nn.Module):
    """Kernel = stride = (2, 16, 16) Conv3d weights: one token per 2-frame x 16 x 16 tubelet."""

    def __init__(self, cfg: MotionFormerConfig, ops: Any) -> None:
        super().__init__()
        conv3d = getattr(ops, "Conv3d", None) or default_ops().Conv3d
        k = (cfg.tubelet, cfg.patch, cfg.patch)
        self.proj = tubelet_conv_class(conv3d)(3, cfg.dim, kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, t*h*w, D), time-major
        return self.proj(x).flatten(2).transpose(1, 2)


class UnusedPatchEmbed(nn.Module):
    """The checkpoint's 2-D patch embedding: loaded for a strict match with the file, never applied."""

    def __init__(self, cfg: MotionFormerConfig, ops: Any) -> None:
        super().__init__()
        conv2d = getattr(ops, "Conv2d", None) or default_ops().Conv2d
        self.proj = conv2d(3, cfg.dim, kernel_size=cfg.patch, stride=cfg.patch)


class FrameAttentionPool(nn.Module):
    """Pre-norm transformer encoder layer over one time step's 196 tokens plus a learned CLS; returns the CLS.

    Only the CLS row of the layer's output is kept, so attention and MLP are evaluated for that row alone (rows
    of a transformer layer are independent given the keys and values).
    """

    def __init__(self, cfg: MotionFormerConfig, ops: Any) -> None:
        super().__init__()
        d = cfg.dim
        self.heads = cfg.heads
        self.cls_token = nn.Parameter(torch.empty(1, 1, d))
        self.self_attn = _InProjAttention(d, ops)
        self.norm1 = ops.LayerNorm(d, eps=cfg.eps)
        self.norm2 = ops.LayerNorm(d, eps=cfg.eps)
        self.linear1 = ops.Linear(d, d * cfg.mlp_ratio, bias=True)
        self.linear2 = ops.Linear(d * cfg.mlp_ratio, d, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, D) -> (N, D)
        n, _, d = x.shape
        x = torch.cat([_cast(self.cls_token, x).expand(n, -1, -1), x], dim=1)
        h = self.norm1(x)
        w, bias = _cast(self.self_attn.in_proj_weight, h), _cast(self.self_attn.in_proj_bias, h)
        q = F.linear(h[:, :1], w[:d], bias[:d])
        kv = F.linear(h, w[d:], bias[d:])
        k, v = kv.split(d, dim=-1)
        hd = d // self.heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(n, -1, self.heads, hd).transpose(1, 2)

        att = F.scaled_dot_product_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(n, 1, d)
        cls = x[:, :1] + self.self_attn.out_proj(att)
        cls = cls + self.linear2(F.gelu(self.linear1(self.norm2(cls))))
        return cls[:, 0]


class _InProjAttention(nn.Module):
    """Holds ``nn.MultiheadAttention``'s parameter names (packed in-projection, ``out_proj``)."""

    def __init__(self, dim: int, ops: Any) -> None:
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = ops.Linear(dim, dim, bias=True)


class SynchformerVisual(nn.Module):
    """MotionFormer visual encoder: segments (N, 16, 3, 224, 224) in [-1, 1] -> (N, 8, 768)."""

    def __init__(self, ops: Any = None, depth: int = 12, dim: int = 768) -> None:
        super().__init__()
        ops = resolve_ops(ops)
        cfg = self.cfg = MotionFormerConfig(depth=depth, dim=dim)
        d = cfg.dim
        self.patch_embed = UnusedPatchEmbed(cfg, ops)
        self.patch_embed_3d = TubeletEmbed(cfg, ops)
        self.cls_token = nn.Parameter(torch.empty(1, 1, d))
        self.pos_embed = nn.Parameter(torch.empty(1, cfg.grid * cfg.grid + 1, d))
        self.temp_embed = nn.Parameter(torch.empty(1, cfg.time_steps, d))
        self.blocks = nn.ModuleList(DividedBlock(cfg, ops) for _ in range(cfg.depth))
        self.norm = ops.LayerNorm(d, eps=cfg.eps)
        self.spatial_attn_agg = FrameAttentionPool(cfg, ops)

    @property
    def dtype(self) -> torch.dtype:
        return self.pos_embed.dtype

    def memory_for_segments(self, batch: int, dtype: torch.dtype | None = None) -> int:
        """Activation bytes of one forward over ``batch`` segments (for a memory manager): the 8 x 196 tokens of
        a segment through a block (q/k/v, attention output, residuals, 4x MLP), plus the float32 input."""
        cfg = self.cfg
        itemsize = torch.empty((), dtype=dtype or self.dtype).element_size()
        tokens = cfg.time_steps * cfg.grid * cfg.grid + 1
        pixels = cfg.frames * 3 * cfg.image_size * cfg.image_size
        return int(batch * (tokens * cfg.dim * 10 * itemsize + pixels * 4))

    def forward(self, segments: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        n, t, c, h, w = segments.shape
        if (t, c, h, w) != (cfg.frames, 3, cfg.image_size, cfg.image_size):
            raise InvalidInputError(
                f"Synchformer segments: got shape {tuple(segments.shape)}; expected (N, {cfg.frames}, 3, "
                f"{cfg.image_size}, {cfg.image_size})")
        x = self.patch_embed_3d(segments.transpose(1, 2))  # (N, 8*196, D)
        steps, patches = cfg.time_steps, cfg.grid * cfg.grid
        pos = _cast(self.pos_embed, x)
        temp = _cast(self.temp_embed, x)
        patch_pos = (pos[:, 1:].unsqueeze(1) + temp.unsqueeze(2)).reshape(1, steps * patches, -1)
        cls = _cast(self.cls_token, x).expand(n, -1, -1) + pos[:, :1]
        x = torch.cat([cls, x + patch_pos], dim=1)
        for block in self.blocks:
            x = block(x, steps, patches)
        x = self.norm(x[:, 1:])  # (N, 8*196, D), time-major
        pooled = self.spatial_attn_agg(x.reshape(n * steps, patches, -1))
        return pooled.view(n, steps, -1)


# ----------------------------------------------------------------------------------------------- segments


def num_segments(num_frames: int) -> int:
    """S = (T - 16) // 8 + 1 (frames after the last full segment are dropped); 0 when T < 16."""
    return 0 if num_frames < SEGMENT else (num_frames - SEGMENT) // STEP + 1


def encode_sync_frames(
    model: SynchformerVisual,
    frames: torch.Tensor,
    *,
    to_input: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch: int = 8,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Frames (B, T, 3, 224, 224) -> sync features (B, S*8, 768), ``batch`` segments per forward.

    ``frames`` may be stored compactly (uint8) with ``to_input`` turning a slice into model input in [-1, 1]; only
    one batch of segments is materialised (and moved to ``device``) at a time.
    """
    if frames.ndim != 5:
        raise InvalidInputError(f"sync frames: got shape {tuple(frames.shape)}; expected (B, T, 3, 224, 224)")
    b, t = frames.shape[:2]
    s = num_segments(t)
    if s == 0:
        raise InvalidInputError(f"sync frames: got {t} frames; expected at least {SEGMENT} (one segment)")
    device = torch.device(device) if device is not None else model.pos_embed.device
    dtype = dtype or torch.float32
    jobs = [(i, start) for i in range(b) for start in range(0, s * STEP, STEP)]
    outputs = []
    for j in range(0, len(jobs), batch):
        seg = torch.stack([frames[i, start:start + SEGMENT] for i, start in jobs[j:j + batch]])
        seg = to_input(seg) if to_input is not None else seg
        outputs.append(model(seg.to(device=device, dtype=dtype)).float().cpu())
        if progress is not None:
            progress(min(j + batch, len(jobs)), len(jobs))
    return torch.cat(outputs).view(b, s * (SEGMENT // model.cfg.tubelet), -1)


# ----------------------------------------------------------------------------------------------- weights


def synchformer_weights(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The visual encoder's entries of a Synchformer checkpoint, named as in :class:`SynchformerVisual`.

    Accepts the published ``synchformer_state_dict.pth`` (whole sync model: only ``vfeat_extractor.*`` is kept),
    Kijai's safetensors, a ``module.``-prefixed copy, or an already stripped visual state dict.
    """
    if "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        name = key.removeprefix("module.")
        if name.startswith(PREFIX):
            out[name[len(PREFIX):]] = value
    if not out and "pos_embed" in sd and "temp_embed" in sd:
        out = dict(sd)
    if not out:
        sample = ", ".join(list(sd)[:3])
        raise WrongCheckpointError(
            f"not a Synchformer checkpoint: no '{PREFIX}*' entries (first keys: {sample})")
    return out


def load_synchformer(
    sd: Mapping[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    ops: Any = None,
) -> SynchformerVisual:
    """Build the visual encoder on the meta device and assign a checkpoint's tensors (strict).

    ``dtype`` casts the stored weights (None keeps the file's dtype; layers cast to the activation dtype on use).
    """
    weights = synchformer_weights(sd)
    depth = len({key.split(".")[1] for key in weights if key.startswith("blocks.")}) or 12
    embed = weights.get("patch_embed_3d.proj.weight")
    dim = int(embed.shape[0]) if embed is not None and embed.ndim == 5 else 768
    with torch.device("meta"):
        model = SynchformerVisual(ops=ops, depth=depth, dim=dim)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise WrongCheckpointError(
            f"Synchformer checkpoint does not match the visual encoder: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    prepared = {}
    for key, ref in expected.items():
        value = weights[key]
        if tuple(value.shape) != tuple(ref.shape):
            raise WrongCheckpointError(
                f"Synchformer checkpoint: {PREFIX}{key} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}")
        prepared[key] = value.to(device=device, dtype=dtype or value.dtype)
    model.load_state_dict(prepared, strict=True, assign=True)
    return model.eval().requires_grad_(False)
