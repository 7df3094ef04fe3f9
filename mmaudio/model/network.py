"""The MMAudio flow network: predicts the flow (velocity) of the audio latent given video and text features.

Reading order: input projections (:meth:`MMAudioNetwork.preprocess_conditions`, cached per generation), then
:meth:`MMAudioNetwork.predict_flow` (timestep embedding, joint blocks, fused blocks, final layer). Parameter
names equal those of the published checkpoints, so their state_dicts load strictly, as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from ..ops import resolve_ops
from .blocks import Condition, FinalBlock, JointBlock, StreamBlock, TokenCondition
from .conditions import NetworkConditions
from .config import NetworkConfig, swiglu_hidden_dim
from .embeddings import RotaryTables, TimestepEmbedder
from .guidance import guided_flow
from .layers import SwiGLU, cast_like, channel_last_conv1d
from .sequence_config import SYNC_DOWNSAMPLE, SYNC_FRAMES_PER_SEGMENT, SequenceLengths

# Non-persistent tensors of the reference that some checkpoint files still carry; recomputed here.
RECOMPUTED_KEYS = ("t_embed.freqs", "latent_rot", "clip_rot")
SYNC_TOKENS_PER_SEGMENT = SYNC_FRAMES_PER_SEGMENT // SYNC_DOWNSAMPLE
_COMPUTE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _drop_recomputed_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    for key in RECOMPUTED_KEYS:
        state_dict.pop(prefix + key, None)


class MMAudioNetwork(nn.Module):
    """Flow network of one MMAudio variant (see :data:`mmaudio.model.config.VARIANTS`).

    Build it directly, or on the meta device followed by ``load_state_dict(sd, strict=True, assign=True)``;
    the timestep frequencies and rotary tables are not part of the state_dict and are computed in float32.
    """

    def __init__(self, config: NetworkConfig, ops: Any = None) -> None:
        super().__init__()
        ops = resolve_ops(ops)
        self._config = config
        self.v2 = config.v2
        self.latent_dim = config.latent_dim
        self.hidden_dim = config.hidden_dim
        self.num_heads = config.num_heads
        dim = config.hidden_dim
        wide = dim * 4  # nominal MLP width of the input projections (mlp_ratio only applies to the blocks)
        act = nn.SiLU if config.v2 else nn.SELU

        # v2 adds a SiLU after the first layer of every projection, which shifts the Sequential indices.
        self.audio_input_proj = nn.Sequential(
            channel_last_conv1d(ops, config.latent_dim, dim, 7), act(), SwiGLU(dim, wide, ops, kernel_size=7))
        self.clip_input_proj = nn.Sequential(
            ops.Linear(config.clip_dim, dim, bias=True), *([nn.SiLU()] if config.v2 else []),
            SwiGLU(dim, wide, ops, kernel_size=3))
        self.sync_input_proj = nn.Sequential(
            channel_last_conv1d(ops, config.sync_dim, dim, 7), act(), SwiGLU(dim, wide, ops, kernel_size=3))
        self.text_input_proj = nn.Sequential(
            ops.Linear(config.text_dim, dim, bias=True), *([nn.SiLU()] if config.v2 else []),
            SwiGLU(dim, wide, ops, kernel_size=1))

        self.clip_cond_proj = ops.Linear(dim, dim, bias=True)
        self.text_cond_proj = ops.Linear(dim, dim, bias=True)
        self.global_cond_mlp = SwiGLU(dim, wide, ops, kernel_size=1)
        # One learned offset per position inside every 8-token Synchformer segment.
        self.sync_pos_emb = nn.Parameter(torch.zeros(1, 1, SYNC_TOKENS_PER_SEGMENT, config.sync_dim))

        self.final_layer = FinalBlock(dim, config.latent_dim, ops)
        self.t_embed = TimestepEmbedder(dim, config.timestep_frequency_dim, config.timestep_max_period, ops)

        joints = config.num_joint_blocks
        self.joint_blocks = nn.ModuleList([
            JointBlock(dim, config.num_heads, ops, mlp_ratio=config.mlp_ratio, pre_only=(i == joints - 1))
            for i in range(joints)
        ])
        self.fused_blocks = nn.ModuleList([
            StreamBlock(dim, config.num_heads, ops, mlp_ratio=config.mlp_ratio, kernel_size=3)
            for _ in range(config.fused_depth)
        ])

        # Stored in the checkpoints: latent statistics, the CLIP text feature of "", learned empty video features.
        self.latent_mean = nn.Parameter(torch.zeros(1, 1, config.latent_dim), requires_grad=False)
        self.latent_std = nn.Parameter(torch.ones(1, 1, config.latent_dim), requires_grad=False)
        self.empty_string_feat = nn.Parameter(torch.zeros(config.text_seq_len, config.text_dim), requires_grad=False)
        self.empty_clip_feat = nn.Parameter(torch.zeros(1, config.clip_dim))
        self.empty_sync_feat = nn.Parameter(torch.zeros(1, config.sync_dim))

        self._rotary = RotaryTables(config.head_dim)
        self._latent_seq_len = 0
        self._clip_seq_len = 0
        self._sync_seq_len = 0
        self.update_seq_lengths(config.latent_seq_len, config.clip_seq_len, config.sync_seq_len)
        register_hook = getattr(self, "register_load_state_dict_pre_hook", None)  # public API from torch 2.5
        if register_hook is not None:
            register_hook(_drop_recomputed_keys)
        else:
            self._register_load_state_dict_pre_hook(_drop_recomputed_keys, with_module=True)

    # ---- configuration -------------------------------------------------------------------------------------
    @property
    def config(self) -> NetworkConfig:
        """The architecture with the current sequence lengths."""
        return self._config.replace(latent_seq_len=self._latent_seq_len, clip_seq_len=self._clip_seq_len,
                                    sync_seq_len=self._sync_seq_len)

    @property
    def latent_seq_len(self) -> int:
        return self._latent_seq_len

    @property
    def clip_seq_len(self) -> int:
        return self._clip_seq_len

    @property
    def sync_seq_len(self) -> int:
        return self._sync_seq_len

    @property
    def text_seq_len(self) -> int:
        return self._config.text_seq_len

    @property
    def device(self) -> torch.device:
        return self.latent_mean.device

    @property
    def compute_dtype(self) -> torch.dtype:
        """Default activation dtype: the parameters' dtype, or bfloat16 when they are stored in fp8."""
        dtype = self.empty_clip_feat.dtype
        return dtype if dtype in _COMPUTE_DTYPES else torch.bfloat16

    def activation_memory(self, batch: int, latent_seq_len: int, clip_seq_len: int, dtype: torch.dtype) -> int:
        """Bytes of activations one ``predict_flow`` over ``batch`` rows holds at its peak, for a memory manager:
        a block's working set over the joint sequence (modulation terms, q/k/v, attention output, residuals and the
        SwiGLU's hidden activations), plus the latent stream's per-token modulation."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        dim = self.hidden_dim
        hidden = swiglu_hidden_dim(int(dim * self._config.mlp_ratio))
        tokens = latent_seq_len + clip_seq_len + self.text_seq_len
        per_token = 10 * dim + 3 * hidden
        return int(batch * itemsize * (tokens * per_token + latent_seq_len * 6 * dim))

    def update_seq_lengths(self, latent_seq_len: int, clip_seq_len: int, sync_seq_len: int) -> None:
        """Set the token counts of the three streams (they follow the duration) and rebuild the rotary tables."""
        lengths = {"latent_seq_len": latent_seq_len, "clip_seq_len": clip_seq_len, "sync_seq_len": sync_seq_len}
        for name, value in lengths.items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if sync_seq_len % SYNC_TOKENS_PER_SEGMENT:
            raise InvalidInputError(
                f"sync_seq_len must be a multiple of {SYNC_TOKENS_PER_SEGMENT} (tokens per Synchformer segment), "
                f"got {sync_seq_len}"
            )
        self._latent_seq_len = latent_seq_len
        self._clip_seq_len = clip_seq_len
        self._sync_seq_len = sync_seq_len
        self._rotary.set_lengths(latent_seq_len, clip_seq_len)

    def set_duration(self, duration_s: float, mode: str | None = None) -> SequenceLengths:
        """Sequence lengths for ``duration_s`` in the network's mode (validated), applied to the network."""
        mode = mode or self._config.mode
        if mode is None:
            raise InvalidInputError("this network has no 16k/44k mode; pass mode= to set_duration")
        lengths = SequenceLengths.for_duration(duration_s, mode)
        self.update_seq_lengths(lengths.latent_seq_len, lengths.clip_seq_len, lengths.sync_seq_len)
        return lengths

    def rebuild_buffers(self) -> None:
        """Recompute the float32 timestep frequencies and rotary tables (e.g. after a meta-device build)."""
        self.t_embed.rebuild()
        self._rotary = RotaryTables(self._config.head_dim)
        self._rotary.set_lengths(self._latent_seq_len, self._clip_seq_len)

    def prepare_device_caches(self, device: torch.device | str) -> None:
        """Copy the rotary and timestep tables to ``device`` now rather than on first use, so a compiled
        ``predict_flow`` sees them already in place and is not compiled a second time."""
        device = torch.device(device)
        for stream in ("latent", "clip"):
            self._rotary.get(stream, device)
        self.t_embed.prepare(device)

    def release_device_caches(self) -> None:
        """Drop the rotary/timestep tables cached on compute devices (called after every generation and on
        every move of the module), so no tensor of ours stays on a GPU once the weights have been offloaded."""
        self._rotary.release_device_copies()
        self.t_embed.release_device_copies()

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> MMAudioNetwork:
        self._rotary.release_device_copies()
        return super()._apply(fn, *args, **kwargs)

    @property
    def latent_rot(self) -> torch.Tensor:
        """Latent rotary table in the reference layout [1, L, head_dim/2, 2, 2] (float32, CPU)."""
        return self._rotary.matrix_table("latent")

    @property
    def clip_rot(self) -> torch.Tensor:
        """CLIP rotary table in the reference layout [1, C, head_dim/2, 2, 2] (float32, CPU)."""
        return self._rotary.matrix_table("clip")

    def load_checkpoint_state(self, state_dict: Mapping[str, torch.Tensor], *, assign: bool = False) -> None:
        """Strictly load a published checkpoint's flat state_dict (recomputed entries are ignored)."""
        self.load_state_dict(dict(state_dict), strict=True, assign=assign)
        if assign:
            self.rebuild_buffers()

    # ---- latent normalisation ------------------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - latent_mean) / latent_std: VAE latents to the network's space (not in place)."""
        return (x - cast_like(self.latent_mean, x)) / cast_like(self.latent_std, x)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """x * latent_std + latent_mean: the sampler's result to VAE latents (not in place)."""
        return x * cast_like(self.latent_std, x) + cast_like(self.latent_mean, x)

    # ---- conditioning --------------------------------------------------------------------------------------
    def _check_features(self, name: str, x: torch.Tensor, length: int, channels: int) -> None:
        if x.ndim != 3 or x.shape[1] != length or x.shape[2] != channels:
            raise InvalidInputError(
                f"{name} must have shape [batch, {length}, {channels}] for the network's current sequence lengths "
                f"(latent {self._latent_seq_len}, clip {self._clip_seq_len}, sync {self._sync_seq_len}), "
                f"got {list(x.shape)}"
            )

    def preprocess_conditions(self, clip_f: torch.Tensor, sync_f: torch.Tensor, text_f: torch.Tensor,
                              ) -> NetworkConditions:
        """Project CLIP [B, clip_len, clip_dim], Synchformer [B, sync_len, sync_dim] and text [B, 77, text_dim]
        features to the hidden size; these do not depend on t, so a sampler computes them once.

        The Synchformer features get the per-segment position offsets, and after projection are resampled to
        the latent length with nearest-exact interpolation (not plain nearest, which differs for 192 -> 345).
        """
        cfg = self._config
        self._check_features("clip_f", clip_f, self._clip_seq_len, cfg.clip_dim)
        self._check_features("sync_f", sync_f, self._sync_seq_len, cfg.sync_dim)
        self._check_features("text_f", text_f, cfg.text_seq_len, cfg.text_dim)

        segments = sync_f.unflatten(1, (-1, SYNC_TOKENS_PER_SEGMENT)) + cast_like(self.sync_pos_emb, sync_f)
        sync = self.sync_input_proj(segments.flatten(1, 2))
        clip = self.clip_input_proj(clip_f)
        text = self.text_input_proj(text_f)

        sync = F.interpolate(sync.transpose(1, 2), size=self._latent_seq_len, mode="nearest-exact").transpose(1, 2)
        return NetworkConditions(clip_f=clip, sync_f=sync, text_f=text, clip_f_c=self.clip_cond_proj(clip.mean(dim=1)),
                          text_f_c=self.text_cond_proj(text.mean(dim=1)))

    def _empty_sequence(self, param: torch.Tensor, bs: int, length: int, dtype: torch.dtype | None,
                        device: torch.device | None) -> torch.Tensor:
        value = param.to(device=device or param.device, dtype=dtype or self.compute_dtype)
        return value.unsqueeze(0).expand(bs, length, -1)

    def get_empty_clip_sequence(self, bs: int, *, dtype: torch.dtype | None = None,
                                device: torch.device | None = None) -> torch.Tensor:
        """The learned "no video" CLIP feature repeated over the clip sequence: [bs, clip_len, clip_dim]."""
        return self._empty_sequence(self.empty_clip_feat, bs, self._clip_seq_len, dtype, device)

    def get_empty_sync_sequence(self, bs: int, *, dtype: torch.dtype | None = None,
                                device: torch.device | None = None) -> torch.Tensor:
        """The learned "no video" Synchformer feature repeated over the sync sequence: [bs, sync_len, sync_dim]."""
        return self._empty_sequence(self.empty_sync_feat, bs, self._sync_seq_len, dtype, device)

    def get_empty_string_sequence(self, bs: int, *, dtype: torch.dtype | None = None,
                                  device: torch.device | None = None) -> torch.Tensor:
        """The stored CLIP text feature of the empty prompt: [bs, 77, text_dim]."""
        value = self.empty_string_feat.to(device=device or self.empty_string_feat.device,
                                          dtype=dtype or self.compute_dtype)
        return value.unsqueeze(0).expand(bs, -1, -1)

    def get_empty_conditions(self, bs: int, negative_text_features: torch.Tensor | None = None, *,
                             dtype: torch.dtype | None = None, device: torch.device | None = None) -> NetworkConditions:
        """Unconditional branch: learned empty clip/sync features with the empty-string text feature, or with
        ``negative_text_features`` (batch 1 or ``bs``) when a negative prompt is given. Computed at batch 1
        and broadcast to ``bs``.
        """
        if negative_text_features is not None:
            dtype = dtype or negative_text_features.dtype
            device = device or negative_text_features.device
            if negative_text_features.ndim != 3 or negative_text_features.shape[0] not in (1, bs):
                raise InvalidInputError(
                    f"negative_text_features must have shape [1 or {bs}, {self.text_seq_len}, "
                    f"{self._config.text_dim}], got {list(negative_text_features.shape)}"
                )
            text = negative_text_features.to(device=device, dtype=dtype)
        else:
            text = self.get_empty_string_sequence(1, dtype=dtype, device=device)
        clip = self.get_empty_clip_sequence(1, dtype=dtype, device=device)
        sync = self.get_empty_sync_sequence(1, dtype=dtype, device=device)
        return self.preprocess_conditions(clip, sync, text).expand(bs)

    # ---- flow ----------------------------------------------------------------------------------------------
    def streamed_blocks(self) -> list[nn.Module]:
        """The blocks that hold nearly all weights, in the order :meth:`predict_flow` runs them (for
        :func:`mmaudio.model.block_streaming.stream_blocks`)."""
        return [*self.joint_blocks, *self.fused_blocks]

    def predict_flow(self, latent: torch.Tensor, t: torch.Tensor | float, conditions: NetworkConditions, *,
                     branches: int = 1) -> torch.Tensor:
        """Velocity [branches * B, L, latent_dim] at flow time t (noise at 0, data at 1; one value per sample or a
        scalar). ``branches`` > 1 runs the same latent [B, L, C] under several stacked condition sets (the
        guidance branches: conditions and t of batch branches * B), projecting the latent only once."""
        self._check_features("latent", latent, self._latent_seq_len, self.latent_dim)
        if branches < 1:
            raise InvalidInputError(f"branches must be at least 1, got {branches}")
        x = self.audio_input_proj(latent)
        if branches > 1:
            x = x.repeat(branches, 1, 1)
        batch = x.shape[0]
        t = torch.as_tensor(t, device=latent.device)
        t = t.reshape(1).expand(batch) if t.numel() == 1 else t.reshape(batch)
        conditions = conditions.expand(batch)

        pooled = self.global_cond_mlp(conditions.clip_f_c + conditions.text_f_c)
        global_c = self.t_embed(t, dtype=x.dtype).unsqueeze(1) + pooled.unsqueeze(1)  # [B, 1, D]
        extended_c = self._latent_condition(global_c, conditions)

        latent_rot = self._rotary.get("latent", x.device)
        clip_rot = self._rotary.get("clip", x.device)
        clip_f, text_f = conditions.clip_f, conditions.text_f
        for joint in self.joint_blocks:
            x, clip_f, text_f = joint(x, clip_f, text_f, global_c, extended_c, latent_rot, clip_rot)
        for fused in self.fused_blocks:
            x = fused(x, extended_c, latent_rot)
        # The final layer takes global_c, not extended_c: a known slip of the reference that the weights learned.
        return self.final_layer(x, global_c)

    @staticmethod
    def _latent_condition(global_c: torch.Tensor, conditions: NetworkConditions) -> Condition:
        """global_c + sync_f, the per-token condition of the latent stream, as distinct rows where they repeat."""
        # A compiled forward keeps every token: the number of distinct rows varies with the video, and each new
        # count would compile the network again.
        distinct = None if torch.compiler.is_compiling() else conditions.distinct_sync_rows()
        if distinct is None:
            return global_c + conditions.sync_f  # [B, L, D]
        return TokenCondition(global_c[distinct.sample, 0] + distinct.rows, distinct.index)

    def forward(self, latent: torch.Tensor, clip_f: torch.Tensor, sync_f: torch.Tensor, text_f: torch.Tensor,
                t: torch.Tensor | float) -> torch.Tensor:
        return self.predict_flow(latent, t, self.preprocess_conditions(clip_f, sync_f, text_f))

    def ode_wrapper(self, t: torch.Tensor | float, latent: torch.Tensor, conditions: NetworkConditions,
                    empty_conditions: NetworkConditions, cfg_strength: float) -> torch.Tensor:
        """Guided velocity for the ODE solver: cfg * cond + (1 - cfg) * uncond, or cond alone when cfg < 1.

        t is broadcast to the batch in float32 (not the latent dtype: bf16 would move t by up to 4e-3).
        """
        t = torch.as_tensor(t, dtype=torch.float32, device=latent.device).reshape(-1).expand(latent.shape[0])
        return guided_flow(self.predict_flow, latent, t, conditions, empty_conditions, cfg_strength)

    def extra_repr(self) -> str:
        return (f"variant={self._config.name}, mode={self._config.mode}, v2={self.v2}, "
                f"lengths=(latent {self._latent_seq_len}, clip {self._clip_seq_len}, sync {self._sync_seq_len})")
