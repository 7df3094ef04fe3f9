"""Recognise a flow-network checkpoint from its tensor shapes and build the matching network.

Files are identified by their keys and shapes only, never by name: the published ``.pth`` files, fp16/fp32
safetensors conversions and fine-tunes of the same architectures all carry the same layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import WrongCheckpointError
from ..modes import mode_of_latent_dim
from ..weights.identify import describe_checkpoint, network_hyperparameters
from .config import CHECKPOINT_FILES, TRAINING_DURATION_S, VARIANTS, NetworkConfig
from .network import RECOMPUTED_KEYS, MMAudioNetwork
from .sequence_config import SequenceLengths

# Keys every flow network has; the first one also gives hidden and latent sizes.
_ANCHOR = "audio_input_proj.0.weight"
_REQUIRED = (_ANCHOR, "t_embed.mlp.0.weight", "latent_mean", "empty_string_feat", "clip_input_proj.0.weight",
             "sync_input_proj.0.weight", "text_input_proj.0.weight")
_BLOCK_INDEX = re.compile(r"^(joint_blocks|fused_blocks)\.(\d+)\.")


def expected_files_text() -> str:
    names = list(CHECKPOINT_FILES.values())
    return ", ".join(names[:-1]) + " or " + names[-1]


def _as_shapes(entries: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Shapes from a state_dict, a {key: shape} mapping or a manifest's {key: {"shape": ...}} mapping."""
    shapes: dict[str, tuple[int, ...]] = {}
    for key, value in entries.items():
        if hasattr(value, "shape"):
            shapes[key] = tuple(int(n) for n in value.shape)
        elif isinstance(value, Mapping) and "shape" in value:
            shapes[key] = tuple(int(n) for n in value["shape"])
        else:
            shapes[key] = tuple(int(n) for n in value)
    return shapes


def find_key_prefix(keys: Sequence[str] | Mapping[str, Any]) -> str | None:
    """The prefix ("" if none) under which a flow network's keys sit, e.g. "model." in a wrapped file."""
    for key in keys:
        if key.endswith(_ANCHOR):
            prefix = key[: -len(_ANCHOR)]
            if prefix == "" or prefix.endswith("."):
                return prefix
    return None


def _not_a_network(shapes: Mapping[str, tuple[int, ...]]) -> WrongCheckpointError:
    description = describe_checkpoint(shapes).strip().rstrip(".")
    return WrongCheckpointError(
        f"not an MMAudio flow network: this looks like {description}. The network loader expects "
        f"{expected_files_text()} (or a safetensors conversion of one of them)."
    )


def _count_blocks(shapes: Mapping[str, tuple[int, ...]], kind: str) -> int:
    indices = {int(m.group(2)) for key in shapes if (m := _BLOCK_INDEX.match(key)) and m.group(1) == kind}
    if indices and indices != set(range(len(indices))):
        raise WrongCheckpointError(f"the checkpoint's {kind} are not numbered 0..{len(indices) - 1}: "
                                   f"found {sorted(indices)}")
    return len(indices)


def expected_shapes(config: NetworkConfig) -> dict[str, tuple[int, ...]]:
    """The state_dict shapes of a network with this configuration (built on the meta device)."""
    with torch.device("meta"):
        net = MMAudioNetwork(config)
    return {key: tuple(value.shape) for key, value in net.state_dict().items()}


def _published_name(config: NetworkConfig) -> str:
    for name, variant in VARIANTS.items():
        if variant.architecture() == config.architecture():
            return name
    return "custom"


def config_from_state_dict(shapes: Mapping[str, Any]) -> NetworkConfig:
    """The :class:`NetworkConfig` whose state_dict has exactly these keys and shapes.

    ``name`` is the published variant with the same architecture, or "custom" for another consistent layout.
    Raises :class:`WrongCheckpointError` for anything that is not an MMAudio flow network.
    """
    shapes = _as_shapes(shapes)
    prefix = find_key_prefix(shapes)
    if prefix is None:
        raise _not_a_network(shapes)
    if prefix:
        shapes = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
    shapes = {k: v for k, v in shapes.items() if k not in RECOMPUTED_KEYS}
    missing = [key for key in _REQUIRED if key not in shapes]
    if missing:
        raise WrongCheckpointError(
            f"this looks like an incomplete MMAudio flow network: missing {', '.join(missing)}; expected a complete "
            f"{expected_files_text()}"
        )

    # The architecture is read by the one rule that identifies files (weights.identify); here it is only checked
    # for what building needs: blocks numbered without gaps, a head size that divides the width, and below,
    # exactly the shapes such a network has.
    hp = network_hyperparameters(shapes)
    hidden, latent_dim, v2 = hp["hidden_dim"], hp["latent_dim"], hp["v2"]
    joints = _count_blocks(shapes, "joint_blocks")
    fused = _count_blocks(shapes, "fused_blocks")
    norm_key = ("joint_blocks.0.latent_block.attn.q_norm.weight" if joints else "fused_blocks.0.attn.q_norm.weight")
    if norm_key not in shapes:
        raise WrongCheckpointError(f"this looks like an incomplete MMAudio flow network: missing {norm_key}")
    head_dim = hp["head_dim"]
    if head_dim <= 0 or hidden % head_dim:
        raise WrongCheckpointError(f"inconsistent MMAudio flow network: head size {head_dim} does not divide the "
                                   f"hidden size {hidden}")
    mode = mode_of_latent_dim(latent_dim)
    lengths = SequenceLengths.for_duration(TRAINING_DURATION_S, mode or "44k")
    config = NetworkConfig(
        latent_dim=latent_dim,
        clip_dim=hp["clip_dim"],
        sync_dim=hp["sync_dim"],
        text_dim=hp["text_dim"],
        hidden_dim=hidden,
        depth=hp["depth"],
        fused_depth=hp["fused_depth"],
        num_heads=hp["num_heads"],
        v2=v2,
        mode=mode,
        latent_seq_len=lengths.latent_seq_len,
        clip_seq_len=lengths.clip_seq_len,
        sync_seq_len=lengths.sync_seq_len,
        text_seq_len=shapes["empty_string_feat"][0],
    )

    expected = expected_shapes(config)
    if expected != shapes:
        absent = sorted(set(expected) - set(shapes))
        extra = sorted(set(shapes) - set(expected))
        wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k])
        details = []
        if absent:
            details.append(f"missing {len(absent)} keys (e.g. {', '.join(absent[:3])})")
        if extra:
            details.append(f"{len(extra)} unexpected keys (e.g. {', '.join(extra[:3])})")
        if wrong:
            k = wrong[0]
            details.append(f"{len(wrong)} keys with other shapes (e.g. {k}: {list(shapes[k])}, expected "
                           f"{list(expected[k])})")
        raise WrongCheckpointError(
            f"this looks like an MMAudio flow network ({'v2' if v2 else 'v1'}, hidden size {hidden}, "
            f"{joints} joint + {fused} fused blocks) but its layout is inconsistent: {'; '.join(details)}"
        )
    return config.replace(name=_published_name(config))


def build_network_from_state_dict(state_dict: Mapping[str, torch.Tensor], ops: Any = None,
                                  device: torch.device | str | None = None,
                                  dtype: torch.dtype | None = None) -> MMAudioNetwork:
    """Detect the variant, build it on the meta device and load the tensors by assignment (no extra copy).

    ``dtype`` casts floating-point tensors (fp8 tensors are kept as stored unless a dtype is given); ``device``
    moves them. The returned network is in eval mode without gradients.
    """
    config = config_from_state_dict(state_dict)
    prefix = find_key_prefix(state_dict) or ""
    tensors = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name in RECOMPUTED_KEYS:
            continue
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype=dtype)
        if device is not None:
            value = value.to(device=device)
        tensors[name] = value
    with torch.device("meta"):
        net = MMAudioNetwork(config, ops=ops)
    net.load_state_dict(tensors, strict=True, assign=True)
    net.rebuild_buffers()
    net.requires_grad_(False)
    return net.eval()
