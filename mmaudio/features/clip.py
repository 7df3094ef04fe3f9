"""DFN5B CLIP ViT-H/14 (open_clip) as MMAudio uses it: per-frame image embeddings and per-token text states.

The model is open_clip's own ``CLIP`` class built from a config file shipped in this pack (no hub access), so the
published open_clip weights and Kijai's fp16/fp32 safetensors load as they are. MMAudio's text features are not
CLIP's pooled text embedding: they are the 77 token states after ``ln_final``, each L2-normalised, without the text
projection. Image features are the standard normalised embeddings of 384 px frames (the 378 px patch grid ignores
the last 6 rows and columns, as in the reference).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError, WrongCheckpointError

CONFIG_FILE = Path(__file__).with_name("configs") / "DFN5B-CLIP-ViT-H-14-384.json"
# Entries of the open_clip state dict that MMAudio never uses; a file without them still loads.
UNUSED_KEYS = ("text_projection", "logit_scale")


@lru_cache(maxsize=1)
def _config_file() -> dict[str, Any]:
    return json.loads(CONFIG_FILE.read_text())


def clip_config() -> dict[str, Any]:
    """The open_clip ``model_cfg`` of DFN5B-CLIP-ViT-H-14-384 (a fresh copy)."""
    return json.loads(json.dumps(_config_file()["model_cfg"]))


def clip_normalization() -> tuple[list[float], list[float]]:
    """OpenAI CLIP mean and std, applied to [0, 1] frames before the image tower."""
    cfg = _config_file()["preprocess_cfg"]
    return list(cfg["mean"]), list(cfg["std"])


def build_clip(config: Mapping[str, Any] | None = None) -> nn.Module:
    """An open_clip ``CLIP`` on the meta device (no memory, no init cost); fill it with :func:`load_clip`."""
    import open_clip

    cfg = dict(config) if config is not None else clip_config()
    with torch.device("meta"):
        return open_clip.model.CLIP(**cfg)


def _count_blocks(keys: Sequence[str], prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".", 1)[0]) for k in keys if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def clip_config_for(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The open_clip config that fits a checkpoint's shapes: the shipped DFN5B config for the published model,
    otherwise one read off the shapes (fine-tunes of other widths, small test models).

    Head counts are not visible in the shapes; other sizes use 64-channel text heads and 80- or 64-channel
    image heads as open_clip's ViT configs do (one head when the width is a multiple of neither).
    """
    weights = _strip_prefix(sd, "visual.conv1.weight")
    published = clip_config()
    try:
        conv = weights["visual.conv1.weight"].shape
        tokens = weights["token_embedding.weight"].shape
        positions = weights["visual.positional_embedding"].shape[0]
        text_positions = weights["positional_embedding"].shape[0]
        proj = weights["visual.proj"].shape
    except KeyError:
        return published  # not a CLIP at all: clip_weights() explains what is missing
    keys = list(weights)
    vision_width, patch = int(conv[0]), int(conv[-1])
    grid = round((positions - 1) ** 0.5)
    inferred = {
        "embed_dim": int(proj[1]),
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": grid * patch,
            "layers": _count_blocks(keys, "visual.transformer.resblocks."),
            "width": vision_width,
            "head_width": next((w for w in (80, 64) if vision_width % w == 0), vision_width),
            "patch_size": patch,
        },
        "text_cfg": {
            "context_length": int(text_positions),
            "vocab_size": int(tokens[0]),
            "width": int(tokens[1]),
            "heads": int(tokens[1]) // 64 if int(tokens[1]) % 64 == 0 else 1,
            "layers": _count_blocks(keys, "transformer.resblocks."),
        },
    }
    same_shape = all(inferred[k] == published[k] for k in ("embed_dim",)) and all(
        inferred[cfg][field] == published[cfg][field]
        for cfg in ("vision_cfg", "text_cfg")
        for field in inferred[cfg]
        if field not in ("head_width", "heads")
    )
    return published if same_shape else inferred


def causal_mask(context_length: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """open_clip's text attention mask: 0 on and below the diagonal, -inf above (float32)."""
    return torch.full((context_length, context_length), float("-inf"), device=device).triu_(1)


def _strip_prefix(sd: Mapping[str, torch.Tensor], anchor: str) -> dict[str, torch.Tensor]:
    """Remove a wrapper prefix such as ``module.`` found in front of ``anchor``."""
    if anchor in sd:
        return dict(sd)
    for key in sd:
        if key.endswith("." + anchor):
            prefix = key[: -len(anchor)]
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return dict(sd)


def clip_weights(sd: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Bring a CLIP checkpoint into the layout of ``expected`` (the meta model's state dict).

    Handles a nested ``state_dict``, wrapper prefixes (``module.``), ``logit_scale`` stored as [1] instead of []
    (Kijai's files) and files without the unused ``text_projection`` / ``logit_scale`` (filled with zeros).
    """
    if "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    weights = _strip_prefix(sd, "visual.conv1.weight")
    if "visual.conv1.weight" not in weights or "token_embedding.weight" not in weights:
        sample = ", ".join(list(sd)[:3])
        hint = " (this looks like a Hugging Face transformers CLIP; use the open_clip weights file)" if any(
            k.startswith(("vision_model.", "text_model.")) for k in sd) else ""
        raise WrongCheckpointError(f"not an open_clip CLIP checkpoint (first keys: {sample}){hint}")
    out: dict[str, torch.Tensor] = {}
    for key, ref in expected.items():
        value = weights.get(key)
        if value is None and key in UNUSED_KEYS:
            value = torch.zeros(ref.shape, dtype=torch.float32)
        if value is None:
            missing = sorted(set(expected) - set(weights))
            raise WrongCheckpointError(
                f"CLIP checkpoint is missing {len(missing)} entries, e.g. {missing[:4]}; expected DFN5B ViT-H/14")
        if tuple(value.shape) != tuple(ref.shape):
            if value.numel() == ref.numel() and value.numel() == 1:
                value = value.reshape(ref.shape)
            else:
                raise WrongCheckpointError(
                    f"CLIP checkpoint: {key} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
                    " (is this the DFN5B ViT-H/14 384 model?)")
        out[key] = value
    unexpected = sorted(set(weights) - set(expected) - {"attn_mask"})
    if unexpected:
        raise WrongCheckpointError(f"CLIP checkpoint has unexpected entries, e.g. {unexpected[:4]}")
    return out


@lru_cache(maxsize=1)
def get_tokenizer() -> Callable[..., torch.Tensor]:
    """open_clip's SimpleTokenizer for ViT-H-14-378-quickgelu (bundled BPE vocabulary; no network)."""
    import open_clip

    return open_clip.get_tokenizer(_config_file()["tokenizer"])


class ClipEncoder(nn.Module):
    """Wraps the open_clip model with MMAudio's two feature functions."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        mean, std = clip_normalization()
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.visual.conv1.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.visual.conv1.weight.device

    @property
    def context_length(self) -> int:
        return int(self.model.positional_embedding.shape[0])

    def streamed_blocks(self) -> list[nn.Module]:
        """The transformer blocks that hold nearly all weights: the image tower's, then the text tower's (for
        :func:`mmaudio.model.block_streaming.stream_blocks`)."""
        return [*self.model.visual.transformer.resblocks, *self.model.transformer.resblocks]

    def memory_for_images(self, batch: int) -> int:
        """Activation bytes of one image forward over ``batch`` frames (for a memory manager): the vision
        transformer's tokens, a block's q/k/v, attention output and 4x MLP, plus the 384 px float32 input in its
        four forms (moved, normalised, cast, and unfolded into patches)."""
        visual = self.model.visual
        width = int(visual.conv1.weight.shape[0])
        tokens = int(visual.positional_embedding.shape[0])
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return int(batch * (tokens * width * 10 * itemsize + 4 * 3 * 384 * 384 * 4))

    def memory_for_text(self, prompts: int) -> int:
        """Activation bytes of one text forward over ``prompts`` prompts (77 tokens each)."""
        width = int(self.model.token_embedding.weight.shape[1])
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return int(max(1, prompts) * self.context_length * width * 10 * itemsize)

    def refresh_buffers(self) -> None:
        """Recompute the non-persistent buffers (after building on meta and assigning weights, or a move)."""
        device = self.device
        mean, std = clip_normalization()
        self.mean = torch.tensor(mean, device=device).view(3, 1, 1)
        self.std = torch.tensor(std, device=device).view(3, 1, 1)
        self.model.attn_mask = causal_mask(self.context_length, device)

    def encode_images(self, frames: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """(N, 3, H, W) float in [0, 1] (384 px in MMAudio) -> (N, 1024) L2-normalised image embeddings.

        ``device``: where to compute (default: where the normalisation buffers live, i.e. the model's device).
        """
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise InvalidInputError(f"CLIP frames: got shape {tuple(frames.shape)}; expected (N, 3, H, W)")
        device = device or self.mean.device
        x = frames.to(device=device, dtype=torch.float32)
        x = (x - self.mean.to(device)) / self.std.to(device)
        return self.model.encode_image(x.to(self.dtype), normalize=True)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, 77) int64 token ids: SOT, BPE tokens, EOT, zero padding (long prompts truncated, EOT kept)."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise InvalidInputError("prompts: expected a list of strings")
        return get_tokenizer()(list(prompts), context_length=self.context_length)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 77) ids -> (B, 77, 1024): every token's state after ln_final, L2-normalised (no projection)."""
        model = self.model
        get_cast = getattr(model.transformer, "get_cast_dtype", None)
        dtype = get_cast() if get_cast is not None else model.positional_embedding.dtype
        tokens = tokens.to(model.token_embedding.weight.device)
        x = model.token_embedding(tokens).to(dtype) + model.positional_embedding.to(dtype)
        mask = model.attn_mask.to(device=x.device)
        if getattr(model.transformer, "batch_first", False):
            x = model.transformer(x, attn_mask=mask)
        else:  # open_clip releases whose text transformer is sequence-first
            x = model.transformer(x.transpose(0, 1), attn_mask=mask).transpose(0, 1)
        return F.normalize(model.ln_final(x), dim=-1)

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.encode_tokens(self.tokenize(prompts))


def load_clip(
    sd: Mapping[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = torch.float32,
    device: torch.device | str = "cpu",
    config: Mapping[str, Any] | None = None,
) -> ClipEncoder:
    """Build CLIP on the meta device and assign a checkpoint's tensors (strict; see :func:`clip_weights`).

    ``dtype`` casts the weights (None keeps the file's dtype); the model computes in its weights' dtype.
    """
    model = build_clip(config if config is not None else clip_config_for(sd))
    weights = clip_weights(sd, model.state_dict())
    weights = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in weights.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    with torch.device(device):
        encoder = ClipEncoder(model)
    encoder.refresh_buffers()
    return encoder.eval().requires_grad_(False)
