"""Every model of one benchmark variant, built at its real size with seeded random weights (no downloads).

Sizes come from the library's own configurations: ``mmaudio.model.VARIANTS`` for the flow network, the VAE and
BigVGAN configs of the variant's mode, the shipped open_clip config of DFN5B CLIP ViT-H/14 and the published
Synchformer visual encoder. Models are built on the meta device and then filled, so nothing is initialised
twice. The ``tiny`` variant shrinks every width (not the structure) so a CI run takes seconds.

Random weights give the real cost of every matmul; the generated audio is meaningless, but agreement between
implementations and precisions on the same weights is still a fair test.

Filling a large variant with random values takes tens of seconds on a CPU. A process that builds the same models
many times (``bench/gpu_check.py``: several rows per variant, one CLIP for all variants) can keep the random
float32 weights after the first build with :func:`keep_random_weights`; later builds copy them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bench.library import library_module

# Widths of the tiny variant; structure (block kinds, kernel sizes, strides, token grids) is the published one.
TINY_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 378, "layers": 2, "width": 32, "head_width": 16, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_SYNCHFORMER = {"dim": 32, "heads": 2, "depth": 2}
TINY_VAE_HIDDEN = 16
TINY_VOCODER_WIDTH = 64  # must stay divisible by 2 ** (number of upsampling stages)

VARIANT_NAMES = ("tiny", "small_16k", "small_44k", "medium_44k", "large_44k", "large_44k_v2")


@dataclass(frozen=True)
class VariantSpec:
    """Configurations of the five models of one variant."""

    name: str
    mode: str  # "16k" or "44k"
    network: Any  # mmaudio.model.NetworkConfig
    vae: Any  # mmaudio.vae.VAEConfig
    vocoder: Any  # mmaudio.vocoder.BigVGANConfig
    clip_cfg: dict[str, Any]  # open_clip model_cfg
    synchformer: dict[str, int] = field(default_factory=dict)  # overrides of MotionFormerConfig; {} = published
    published: bool = True  # the reference has a builder of the same name

    @property
    def tiny(self) -> bool:
        return not self.published


def variant_spec(name: str) -> VariantSpec:
    """The spec of a published variant (see ``VARIANT_NAMES``) or of ``tiny``."""
    model = library_module("model")
    vae_mod = library_module("vae")
    voc_mod = library_module("vocoder")
    clip_mod = library_module("features.clip")
    if name == "tiny":
        clip_cfg = TINY_CLIP_CFG
        mode = "16k"
        lengths = model.SequenceLengths.for_duration(8.0, mode)
        network = model.NetworkConfig(
            name="tiny", latent_dim=20, clip_dim=clip_cfg["embed_dim"], sync_dim=TINY_SYNCHFORMER["dim"],
            text_dim=clip_cfg["text_cfg"]["width"], hidden_dim=64, depth=4, fused_depth=2, num_heads=2, mode=mode,
            latent_seq_len=lengths.latent_seq_len, clip_seq_len=lengths.clip_seq_len,
            sync_seq_len=lengths.sync_seq_len)
        base = vae_mod.VAEConfig.for_mode(mode)
        vae = vae_mod.VAEConfig(data_dim=base.data_dim, embed_dim=base.embed_dim, hidden_dim=TINY_VAE_HIDDEN)
        vocoder = voc_mod.BigVGANConfig.for_mode(mode).with_width(TINY_VOCODER_WIDTH)
        return VariantSpec(name, mode, network, vae, vocoder, clip_cfg, dict(TINY_SYNCHFORMER), published=False)
    if name not in model.VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANT_NAMES)}")
    network = model.VARIANTS[name]
    mode = network.mode
    return VariantSpec(name, mode, network, vae_mod.VAEConfig.for_mode(mode), voc_mod.BigVGANConfig.for_mode(mode),
                       clip_mod.clip_config())


# ---- random weights, optionally kept for later builds -------------------------------------------------------
_kept: dict[tuple[Any, ...], dict[str, torch.Tensor]] | None = None


def keep_random_weights(enabled: bool = True) -> None:
    """Keep (or stop keeping, and drop) the random float32 CPU weights of every model built from now on, so the
    next build of the same model with the same seed copies them instead of drawing them again."""
    global _kept
    _kept = {} if enabled else None


def _random_module(module: nn.Module, key: tuple[Any, ...], seed: int) -> nn.Module:
    """A meta-device module with real CPU storage and random parameters: drawn, or copied from the kept ones
    (never shared with them, so later in-place changes of the module cannot reach the kept copy)."""
    if _kept is None:
        return _materialize(module, seed)
    state = _kept.get(key)
    if state is None:
        module = _materialize(module, seed)
        _kept[key] = {name: p.detach().clone() for name, p in module.named_parameters()}
        return module
    module = module.to_empty(device="cpu")
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.copy_(state[name])
    return module


# ---- random weights ----------------------------------------------------------------------------------------
@torch.no_grad()
def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Fill every parameter with seeded values of a trained-like scale.

    Matrices and kernels get N(0, 1/fan_in), so activations keep their size through deep stacks; 1-D weights
    (norm scales) stay near 1; everything else (biases, tokens, embeddings of one dim) is small.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for name, param in module.named_parameters():
        # Drawn in place where the parameter is a float32 CPU tensor (the same draws, without a second copy).
        direct = param.dtype == torch.float32 and param.device.type == "cpu" and param.is_contiguous()
        values = param if direct else torch.empty(param.shape, dtype=torch.float32)
        if param.ndim >= 2:
            values.normal_(0.0, param[0].numel() ** -0.5, generator=gen)
        elif param.ndim == 1 and name.endswith("weight"):
            values.normal_(1.0, 0.02, generator=gen)
        else:
            values.normal_(0.0, 0.02, generator=gen)
        if not direct:
            param.copy_(values)
    return module


def _materialize(module: nn.Module, seed: int) -> nn.Module:
    """A meta-device module with real CPU storage and random parameters (buffers are the caller's job)."""
    module = module.to_empty(device="cpu")
    return randomize_(module, seed)


def network_state_dict(spec: VariantSpec, seed: int) -> dict[str, torch.Tensor]:
    """float32 CPU state_dict of the flow network, with the published key names.

    ``latent_std`` is kept positive (it divides in the reference's ``normalize``).
    """
    key = ("network", spec.name, seed)
    if _kept is not None and key in _kept:
        return _kept[key]
    model = library_module("model")
    with torch.device("meta"):
        net = model.MMAudioNetwork(spec.network)
    _materialize(net, seed)
    with torch.no_grad():
        net.latent_std.abs_().add_(0.5)
    state = {k: v.detach() for k, v in net.state_dict().items()}
    if _kept is not None:  # shared with the callers, who only read it (builds copy or cast it)
        _kept[key] = state
    return state


def build_network(state_dict: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device) -> Any:
    """Our network from a float32 state_dict, with weights stored in ``dtype`` (fp8: layer weights only)."""
    model = library_module("model")
    precision = library_module("weights.precision")
    if dtype == torch.float32:
        cast = state_dict
    else:
        narrow = None
        if precision.is_fp8(dtype):
            config = model.config_from_state_dict({k: tuple(v.shape) for k, v in state_dict.items()})
            with torch.device("meta"):
                narrow = precision.layer_weight_keys(model.MMAudioNetwork(config))
        cast = precision.cast_state_dict(state_dict, dtype, keep_fp32=precision.FP32_KEYS["network"],
                                         narrow_keys=narrow,
                                         compute_dtype=precision.compute_dtype_for(dtype, device))
    return model.build_network_from_state_dict(cast, device=device)


def build_decoder(spec: VariantSpec, seed: int, device: torch.device, dtype: torch.dtype = torch.float32) -> Any:
    """VAE decoder + BigVGAN of the variant's mode (the VAE's weight normalisation folded, filters computed)."""
    vae_mod = library_module("vae")
    voc_mod = library_module("vocoder")
    decoder_mod = library_module("decoder")
    with torch.device("meta"):
        vae = vae_mod.VAE(spec.vae, with_encoder=False)
        vocoder = voc_mod.BigVGAN(spec.vocoder)
    vae = _random_module(vae, ("vae", spec.mode, repr(spec.vae), seed), seed + 1)
    vae.data_mean = torch.zeros(1, spec.vae.data_dim, 1)
    vae.data_std = torch.ones(1, spec.vae.data_dim, 1)
    vae.fold_weights(dtype)
    vocoder = _random_module(vocoder, ("vocoder", spec.mode, repr(spec.vocoder), seed), seed + 2)
    vocoder.reset_filters()
    if dtype != torch.float32:
        vocoder.to(dtype)
        vocoder.reset_filters()
    decoder = decoder_mod.AudioDecoder(vae.eval().requires_grad_(False), vocoder.eval().requires_grad_(False))
    return decoder.to(device)


def _synchformer(overrides: dict[str, int]) -> nn.Module:
    """SynchformerVisual on the meta device with other widths (``depth``, ``dim``; heads follow the width where
    the library derives them): through its constructor where it takes them, else through the module-level
    config class its constructor reads."""
    sync_mod = library_module("features.synchformer")
    accepted = inspect.signature(sync_mod.SynchformerVisual).parameters
    if not overrides or "dim" in accepted:
        with torch.device("meta"):
            return sync_mod.SynchformerVisual(**{k: v for k, v in overrides.items() if k in accepted})
    original = sync_mod.MotionFormerConfig
    sync_mod.MotionFormerConfig = type("TinyMotionFormerConfig", (original,), dict(overrides))
    try:
        with torch.device("meta"):
            return sync_mod.SynchformerVisual()
    finally:
        sync_mod.MotionFormerConfig = original


def build_features(spec: VariantSpec, seed: int, device: torch.device, dtype: torch.dtype, *,
                   with_clip: bool = True, with_sync: bool = True) -> Any:
    """FeatureExtractor with CLIP (image and text towers) and the Synchformer visual encoder, as asked."""
    import open_clip

    clip_mod = library_module("features.clip")
    extractor_mod = library_module("features.extractor")
    clip = None
    if with_clip:
        with torch.device("meta"):
            model = open_clip.model.CLIP(**spec.clip_cfg)
        model = _random_module(model, ("clip", repr(spec.clip_cfg), seed), seed + 3)
        model = model.to(device=device, dtype=dtype)
        with torch.device(device):
            clip = clip_mod.ClipEncoder(model)
        clip.refresh_buffers()
        clip.eval().requires_grad_(False)
    sync = None
    if with_sync:
        key = ("synchformer", repr(sorted(spec.synchformer.items())), seed)
        sync = _random_module(_synchformer(spec.synchformer), key, seed + 4)
        sync = sync.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return extractor_mod.FeatureExtractor(clip, sync)


def parameter_count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def weight_bytes(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() * p.element_size() for p in module.parameters())
