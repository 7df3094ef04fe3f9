"""What a weights file is, decided from its tensor names and shapes, never from its file name.

Five components make up MMAudio: the flow network (five published variants), the mel VAE (16k and 44k), the
vocoder (BigVGAN v1 at 16 kHz, BigVGAN v2 at 44.1 kHz), Synchformer's visual encoder and the DFN5B CLIP.
Each rule below looks for an *anchor* tensor that only that component has, wherever it sits in the file
(``generator.conv_pre.weight_v``, ``vae.decoder.conv_in.weight``, ...), and then reads the component's
hyperparameters from shape *relations* (mel bands, latent size, upsampling kernels, block counts) rather than
from absolute widths, so scaled-down test files and fine-tunes are recognised too.

The result, :class:`CheckpointIdentity`, carries a sentence for users (``description``), the key prefix that
leads to the component inside the file, and the hyperparameters found.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..modes import MODES, mode_of_latent_dim, mode_of_mels, mode_words

log = logging.getLogger(__name__)

Shapes = Mapping[str, Sequence[int]]

KINDS = ("network", "vae", "vocoder", "synchformer", "clip")
KIND_NAMES = {
    "network": "an MMAudio flow network",
    "vae": "an MMAudio mel VAE",
    "vocoder": "a BigVGAN vocoder",
    "synchformer": "a Synchformer visual encoder",
    "clip": "a DFN5B CLIP model",
    "unknown": "not an MMAudio file",
}


@dataclass(frozen=True)
class CheckpointIdentity:
    """One component found in a weights file.

    ``prefix`` is stripped from the file's (flattened) key names and ``add_prefix`` prepended to get the names
    the component's module uses; ``problems`` lists reasons the file cannot be loaded although recognised.
    """

    kind: str
    variant: str | None = None
    mode: str | None = None
    description: str = ""
    prefix: str = ""
    add_prefix: str = ""
    layout: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    num_params: int = 0

    @property
    def is_known(self) -> bool:
        return self.kind != "unknown"

    def owns(self, file_key: str) -> bool:
        """Whether ``file_key`` (a flattened file key) belongs to this component."""
        return file_key.startswith(self.prefix)

    def canonical_name(self, file_key: str) -> str:
        """The module-side name of ``file_key`` (which must satisfy :meth:`owns`)."""
        return self.add_prefix + file_key[len(self.prefix):]


# ---- helpers -------------------------------------------------------------------------------------------------

def _shape(view: Shapes, key: str) -> tuple[int, ...] | None:
    value = view.get(key)
    return None if value is None else tuple(int(d) for d in value)


def _indices(view: Shapes, pattern: str) -> list[int]:
    """Sorted distinct integers ``i`` of keys matching ``pattern`` (a regex with one group) at their start."""
    regex = re.compile(pattern)
    found = {int(m.group(1)) for key in view if (m := regex.match(key))}
    return sorted(found)


def _count(view: Shapes, pattern: str) -> int:
    """Number of consecutive blocks ``0..n-1`` present (gaps count as the end)."""
    n = 0
    for index in _indices(view, pattern):
        if index != n:
            break
        n += 1
    return n


def _numel(view: Shapes) -> int:
    return sum(math.prod(tuple(s)) for s in view.values())


def _human_count(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} B"
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} k"
    return str(n)


def _nesting(prefix: str) -> str:
    return f", nested under '{prefix.rstrip('.')}'" if prefix else ""


# ---- flow network --------------------------------------------------------------------------------------------

# name -> (latent_dim, hidden_dim, depth, fused_depth, v2); from the published manifests
PUBLISHED_NETWORKS: dict[str, tuple[int, int, int, int, bool]] = {
    "small_16k": (20, 448, 12, 8, False),
    "small_44k": (40, 448, 12, 8, False),
    "medium_44k": (40, 896, 12, 8, False),
    "large_44k": (40, 896, 21, 14, False),
    "large_44k_v2": (40, 896, 21, 14, True),
}
_NETWORK_REQUIRED = (
    "t_embed.mlp.0.weight", "final_layer.conv.weight", "latent_mean", "latent_std", "clip_input_proj.0.weight",
    "sync_input_proj.0.weight", "text_input_proj.0.weight", "empty_string_feat", "empty_clip_feat",
    "empty_sync_feat", "sync_pos_emb",
)


def network_hyperparameters(view: Shapes) -> dict[str, Any]:
    """Architecture of a flow network read from its state-dict shapes (our own rule, independent of the model)."""
    audio_in = _shape(view, "audio_input_proj.0.weight")
    if audio_in is None or len(audio_in) != 3:
        raise ValueError("not a flow network: audio_input_proj.0.weight is missing or not a Conv1d weight")
    hidden, latent_dim = audio_in[0], audio_in[1]
    joint = _count(view, r"joint_blocks\.(\d+)\.")
    fused = _count(view, r"fused_blocks\.(\d+)\.")
    qnorm = _shape(view, "joint_blocks.0.latent_block.attn.q_norm.weight") or _shape(
        view, "fused_blocks.0.attn.q_norm.weight"
    )
    head_dim = qnorm[0] if qnorm else 64
    t_in = _shape(view, "t_embed.mlp.0.weight")
    freq_dim = t_in[1] if t_in else 256
    # v2 puts a SiLU after the clip/text input Linear, which shifts their MLP to index 2; without those keys,
    # the timestep embedding decides (v2 feeds hidden_dim sinusoid channels, v1 256).
    if "clip_input_proj.2.w1.weight" in view or "text_input_proj.2.w1.weight" in view:
        v2 = True
    elif "clip_input_proj.1.w1.weight" in view or "text_input_proj.1.w1.weight" in view:
        v2 = False
    else:
        v2 = freq_dim == hidden and hidden != 256
    dims = {}
    for name in ("clip", "sync", "text"):
        proj = _shape(view, f"{name}_input_proj.0.weight")
        dims[name] = proj[1] if proj else None
    return {
        "latent_dim": latent_dim,
        "hidden_dim": hidden,
        "depth": joint + fused,
        "fused_depth": fused,
        "num_heads": hidden // head_dim if head_dim else None,
        "head_dim": head_dim,
        "v2": v2,
        "timestep_frequency_dim": freq_dim,
        "clip_dim": dims["clip"],
        "sync_dim": dims["sync"],
        "text_dim": dims["text"],
    }


def _network(view: Shapes, prefix: str, shapes: Shapes) -> CheckpointIdentity | None:
    audio_in = _shape(view, "audio_input_proj.0.weight")
    if audio_in is None or len(audio_in) != 3 or "t_embed.mlp.0.weight" not in view:
        return None
    hp = network_hyperparameters(view)
    variant = next(
        (name for name, arch in PUBLISHED_NETWORKS.items()
         if arch == (hp["latent_dim"], hp["hidden_dim"], hp["depth"], hp["fused_depth"], hp["v2"])
         and hp["clip_dim"] == 1024 and hp["sync_dim"] == 768 and hp["text_dim"] == 1024),
        "custom",
    )
    mode = mode_of_latent_dim(hp["latent_dim"])
    problems = [f"missing tensor '{key}'" for key in _NETWORK_REQUIRED if key not in view]

    notes: list[str] = []
    if hp["clip_dim"] != 1024 or hp["text_dim"] != 1024 or hp["sync_dim"] != 768:
        notes.append(
            f"its condition sizes (CLIP {hp['clip_dim']}, text {hp['text_dim']}, sync {hp['sync_dim']}) do not "
            "fit DFN5B CLIP (1024) and Synchformer (768)"
        )
    if mode is None:
        notes.append(f"latent size {hp['latent_dim']} fits neither the 16 kHz (20) nor the 44.1 kHz (40) VAE")

    n = _numel(view)
    if variant == "custom":
        label = (
            f"custom architecture (width {hp['hidden_dim']}, {hp['depth']} blocks of which {hp['fused_depth']} "
            f"single-stream{', v2' if hp['v2'] else ''})"
        )
        layout = "flow-network layout"
    else:
        label = variant
        layout = f"mmaudio_{variant}.pth layout"
    sound = f"{mode_words(mode)}, " if mode else ""
    description = f"MMAudio flow network {label} ({sound}{_human_count(n)} parameters; {layout}{_nesting(prefix)})"
    return CheckpointIdentity(
        kind="network", variant=variant, mode=mode, description=description, prefix=prefix, layout=layout,
        details=hp, notes=tuple(notes), problems=tuple(problems), num_params=n,
    )


# ---- mel VAE -------------------------------------------------------------------------------------------------



def _vae(view: Shapes, prefix: str, shapes: Shapes) -> CheckpointIdentity | None:
    conv_in = _shape(view, "decoder.conv_in.weight")
    conv_out = _shape(view, "decoder.conv_out.weight")
    if conv_in is None or conv_out is None or len(conv_in) != 3 or len(conv_out) != 3:
        return None
    if "decoder.learnable_gain" not in view:  # magnitude-preserving (EDM2) VAE marker; other VAEs lack it
        return None
    data_dim, hidden, embed_dim = conv_out[0], conv_out[1], conv_in[1]
    mode = mode_of_mels(data_dim, embed_dim)
    published = mode is not None and hidden == MODES[mode].vae_hidden_dim
    variant = ("v1-16" if mode == "16k" else "v1-44") if published else "custom"
    has_encoder = "encoder.conv_in.weight" in view
    notes: list[str] = []
    problems: list[str] = []
    if not has_encoder:
        notes.append("decoder only: it can decode generated audio but cannot encode input audio")
    if "data_mean" not in view or "data_std" not in view:
        problems.append("missing the data_mean/data_std statistics")
    if mode is None:
        notes.append(f"{data_dim} mel bands with latent size {embed_dim} match neither published VAE")
    n = _numel(view)
    width = "" if published else f", custom width {hidden}"
    layout = f"{variant}.pth layout" if published else "VAE layout"
    if not has_encoder:
        layout += ", decoder only"
    sound = mode_words(mode) if mode else f"{data_dim} mel bands"
    description = f"MMAudio VAE, {sound}{width} ({_human_count(n)} parameters; {layout}{_nesting(prefix)})"
    details = {"data_dim": data_dim, "embed_dim": embed_dim, "hidden_dim": hidden, "has_encoder": has_encoder}
    return CheckpointIdentity(
        kind="vae", variant=variant, mode=mode, description=description, prefix=prefix, layout=layout,
        details=details, notes=tuple(notes), problems=tuple(problems), num_params=n,
    )


# ---- BigVGAN vocoders ----------------------------------------------------------------------------------------

_WEIGHT_NORM_NAMES = {
    "weight_g/weight_v": ".weight_v",
    "parametrizations": ".parametrizations.weight.original1",
    "fused": ".weight",
}
_VOCODERS = {
    # variant: (mode, mel bands, upsampling kernel sizes, conv_post has a bias, sampling rate)
    "bigvgan_v1_16k": ("16k", 80, (8, 8, 4, 4, 4, 4), True, 16000),
    "bigvgan_v2_44k": ("44k", 128, (16, 8, 4, 4, 4, 4), False, 44100),
}


def _conv_weight(view: Shapes, module: str, style: str) -> tuple[int, ...] | None:
    return _shape(view, module + _WEIGHT_NORM_NAMES[style])


def _vocoder(view: Shapes, prefix: str, shapes: Shapes) -> CheckpointIdentity | None:
    if "activation_post.act.alpha" not in view:  # snake activations: BigVGAN, not HiFi-GAN
        return None
    style = next((s for s in _WEIGHT_NORM_NAMES if _conv_weight(view, "conv_pre", s) is not None), None)
    if style is None:
        return None
    conv_pre = _conv_weight(view, "conv_pre", style)
    if conv_pre is None or len(conv_pre) != 3:
        return None
    kernels: list[int] = []
    while (up := _conv_weight(view, f"ups.{len(kernels)}.0", style)) is not None and len(up) == 3:
        kernels.append(up[2])
    rates = [k // 2 for k in kernels]
    num_mels, channels = conv_pre[1], conv_pre[0]
    post_bias = "conv_post.bias" in view
    variant, mode, rate = "bigvgan_other", None, None
    for name, (v_mode, mels, v_kernels, v_bias, v_rate) in _VOCODERS.items():
        if num_mels == mels and tuple(kernels) == v_kernels and post_bias == v_bias:
            variant, mode, rate = name, v_mode, v_rate
    notes: list[str] = []
    if variant == "bigvgan_other":
        notes.append(
            f"{num_mels} mel bands, upsampling x{math.prod(rates) if rates else 0}: not one of the two vocoders "
            "MMAudio uses (BigVGAN v1 16 kHz, BigVGAN v2 44.1 kHz)"
        )
    layout = {
        "bigvgan_v1_16k": "best_netG.pt layout", "bigvgan_v2_44k": "bigvgan_generator.pt layout"
    }.get(variant, "BigVGAN layout")
    wn = {"weight_g/weight_v": "weight norm as weight_g/weight_v", "parametrizations": "weight norm as "
          "parametrizations", "fused": "weight norm already folded into the weights"}[style]
    n = _numel(view)
    if variant == "bigvgan_v1_16k":
        label = "BigVGAN v1 vocoder, 16 kHz, 80 mel bands"
    elif variant == "bigvgan_v2_44k":
        label = "BigVGAN v2 vocoder, 44.1 kHz, 128 mel bands"
    else:
        label = f"BigVGAN vocoder with {num_mels} mel bands"
    description = f"{label} ({_human_count(n)} parameters; {layout}{_nesting(prefix)}; {wn})"
    details = {
        "num_mels": num_mels, "upsample_initial_channel": channels, "upsample_kernel_sizes": kernels,
        "upsample_rates": rates, "hop_length": math.prod(rates) if rates else 0, "use_bias_at_final": post_bias,
        "weight_norm": style, "sampling_rate": rate,
        "num_resblocks": _count(view, r"resblocks\.(\d+)\."),
    }
    return CheckpointIdentity(
        kind="vocoder", variant=variant, mode=mode, description=description, prefix=prefix, layout=layout,
        details=details, notes=tuple(notes), num_params=n,
    )


# ---- Synchformer ---------------------------------------------------------------------------------------------

SYNCHFORMER_ROOT = "vfeat_extractor."


def _synchformer(view: Shapes, prefix: str, shapes: Shapes) -> CheckpointIdentity | None:
    patch3d = _shape(view, "patch_embed_3d.proj.weight")
    if patch3d is None or len(patch3d) != 5 or "spatial_attn_agg.self_attn.in_proj_weight" not in view:
        return None
    outer = prefix[: -len(SYNCHFORMER_ROOT)] if prefix.endswith(SYNCHFORMER_ROOT) else prefix
    audio_branch = any(k.startswith(outer + "afeat_extractor.") for k in shapes)
    embed, temporal, patch = patch3d[0], patch3d[2], patch3d[3]
    depth = _count(view, r"blocks\.(\d+)\.")
    published = (embed, temporal, patch, depth) == (768, 2, 16, 12)
    variant = "motionformer_224_16x4" if published else "custom"
    notes = ["the file also holds Synchformer's audio branch, which MMAudio does not use"] if audio_branch else []
    problems = [] if "temp_embed" in view and "pos_embed" in view else ["missing the position embeddings"]
    n = _numel(view)
    layout = "synchformer_state_dict.pth layout" if prefix.endswith(SYNCHFORMER_ROOT) else "bare visual encoder"
    size = "" if published else f", custom size (width {embed}, {depth} blocks)"
    description = f"Synchformer visual encoder{size} ({_human_count(n)} parameters; {layout}{_nesting(outer)})"
    details = {"embed_dim": embed, "depth": depth, "patch_size": patch, "temporal_patch": temporal,
               "has_audio_branch": audio_branch}
    return CheckpointIdentity(
        kind="synchformer", variant=variant, mode=None, description=description, prefix=prefix,
        add_prefix=SYNCHFORMER_ROOT, layout=layout, details=details, notes=tuple(notes), problems=tuple(problems),
        num_params=n,
    )


# ---- CLIP ----------------------------------------------------------------------------------------------------

_DFN5B = {"vision_width": 1280, "patch_size": 14, "image_size": 378, "vision_layers": 32, "text_width": 1024,
          "text_layers": 24, "context_length": 77, "embed_dim": 1024}
_CLIP_TEXT_KEYS = ("token_embedding.weight", "positional_embedding", "ln_final.weight")


def _clip(view: Shapes, prefix: str, shapes: Shapes) -> CheckpointIdentity | None:
    conv1 = _shape(view, "visual.conv1.weight")
    if conv1 is None or len(conv1) != 4 or "visual.proj" not in view:
        return None
    pos = _shape(view, "visual.positional_embedding") or (0, 0)
    grid = math.isqrt(max(pos[0] - 1, 0))
    token = _shape(view, "token_embedding.weight")
    text_pos = _shape(view, "positional_embedding")
    proj = _shape(view, "visual.proj") or (0, 0)
    details = {
        "vision_width": conv1[0], "patch_size": conv1[2], "image_size": grid * conv1[2],
        "vision_layers": _count(view, r"visual\.transformer\.resblocks\.(\d+)\."),
        "text_width": token[1] if token else None, "vocab_size": token[0] if token else None,
        "text_layers": _count(view, r"transformer\.resblocks\.(\d+)\."),
        "context_length": text_pos[0] if text_pos else None, "embed_dim": proj[1],
    }
    published = all(details[k] == v for k, v in _DFN5B.items())
    variant = "dfn5b_vit_h_14_378" if published else "open_clip_other"
    notes: list[str] = []
    problems = [f"missing the text tower ('{k}')" for k in _CLIP_TEXT_KEYS if k not in view]
    if not published:
        notes.append("not the DFN5B ViT-H/14-378 CLIP that MMAudio was trained with")
        if details["embed_dim"] != 1024 or details["text_width"] != 1024:
            notes.append(
                f"its image/text features have {details['embed_dim']}/{details['text_width']} channels; the "
                "published networks need 1024/1024"
            )
    logit = _shape(view, "logit_scale")
    if logit is not None and logit != ():
        notes.append(f"logit_scale is stored with shape {list(logit)} (unused by MMAudio)")
    n = _numel(view)
    label = "DFN5B CLIP ViT-H/14-378" if published else (
        f"open_clip CLIP (image width {details['vision_width']}, {details['vision_layers']} image layers)"
    )
    description = f"{label} ({_human_count(n)} parameters; open_clip layout{_nesting(prefix)})"
    return CheckpointIdentity(
        kind="clip", variant=variant, mode=None, description=description, prefix=prefix, layout="open_clip layout",
        details=details, notes=tuple(notes), problems=tuple(problems), num_params=n,
    )


# ---- search ----------------------------------------------------------------------------------------------------

_Rule = Callable[[Shapes, str, Shapes], "CheckpointIdentity | None"]
# kind -> (anchor names relative to the component, rule)
_RULES: dict[str, tuple[tuple[str, ...], _Rule]] = {
    "network": (("audio_input_proj.0.weight",), _network),
    "vae": (("decoder.conv_in.weight",), _vae),
    "vocoder": (tuple(f"conv_pre{suffix}" for suffix in _WEIGHT_NORM_NAMES.values()), _vocoder),
    "synchformer": (("patch_embed_3d.proj.weight",), _synchformer),
    "clip": (("visual.conv1.weight",), _clip),
}


def _prefixes(shapes: Shapes, anchor: str) -> list[str]:
    """Every prefix ``p`` ("" or ending in '.') such that ``p + anchor`` is a key."""
    found = []
    for key in shapes:
        if key == anchor:
            found.append("")
        elif key.endswith("." + anchor):
            found.append(key[: len(key) - len(anchor)])
    return found


def identify_components(shapes: Shapes) -> list[CheckpointIdentity]:
    """Every MMAudio component found in ``shapes`` (flattened file keys -> shapes), outermost first."""
    found: list[CheckpointIdentity] = []
    seen: set[tuple[str, str]] = set()
    for kind, (anchors, rule) in _RULES.items():
        for anchor in anchors:
            for prefix in _prefixes(shapes, anchor):
                if (kind, prefix) in seen:
                    continue
                seen.add((kind, prefix))
                view = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
                try:
                    identity = rule(view, prefix, shapes)
                except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as error:
                    log.debug("%s rule failed under prefix %r: %s", kind, prefix, error)
                    identity = None
                if identity is not None:
                    found.append(identity)
    found.sort(key=lambda ident: (len(ident.prefix) - len(ident.add_prefix), KINDS.index(ident.kind)))
    return found


def _unknown(shapes: Shapes) -> CheckpointIdentity:
    keys = list(shapes)
    hint = ""
    if any(k.endswith("vision_model.embeddings.patch_embedding.weight") for k in keys):
        hint = (" It looks like a Hugging Face transformers CLIP; MMAudio needs the open_clip file "
                "(open_clip_pytorch_model.bin) or Kijai's apple_DFN5B-CLIP-ViT-H-14-384 safetensors.")
    elif any(k.split(".", 1)[0] in ("optimizer", "optimizer_state_dict", "scheduler") for k in keys):
        hint = " It looks like a training checkpoint without recognisable model weights."
    elif any(k.startswith("model.diffusion_model.") for k in keys):
        hint = " It looks like an image-diffusion checkpoint."
    sample = ", ".join(f"'{k}'" for k in keys[:3])
    if not keys:
        description = "Not an MMAudio file: it holds no tensors."
    else:
        description = (
            f"Not an MMAudio file: no flow network, VAE, vocoder, Synchformer or CLIP weights among its "
            f"{len(keys)} tensors (first: {sample}).{hint}"
        )
    return CheckpointIdentity(kind="unknown", description=description, num_params=_numel(shapes))


def identify_checkpoint(shapes: Shapes) -> CheckpointIdentity:
    """The main component in ``shapes``; ``kind == "unknown"`` (with a description saying why) if there is none.

    When a file holds several components (a VAE with its vocoder, say), the outermost one is returned and its
    description names the others; :func:`identify_components` lists them all.
    """
    components = identify_components(shapes)
    if not components:
        return _unknown(shapes)
    main, others = components[0], components[1:]
    if not others:
        return main
    also = "; ".join(c.description for c in others)
    return dataclasses.replace(main, description=f"{main.description}. Also in the file: {also}")


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")) if text else ""


def describe_checkpoint(shapes: Shapes) -> str:
    """What ``shapes`` is, for users: the description, then any notes and problems as sentences."""
    identity = identify_checkpoint(shapes)
    parts = [_sentence(identity.description), *(_sentence(n) for n in identity.notes)]
    parts += [_sentence(f"cannot be loaded: {p}") for p in identity.problems]
    return " ".join(p for p in parts if p)


def component_of_kind(shapes: Shapes, kind: str) -> CheckpointIdentity | None:
    """The outermost component of ``kind`` in ``shapes``, or ``None``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return next((c for c in identify_components(shapes) if c.kind == kind), None)
