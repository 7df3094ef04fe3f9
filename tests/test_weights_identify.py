"""Identification of weights files by their tensors: every published file, its nested and renamed layouts,
scaled-down copies, fine-tune-like variations and files that are not MMAudio at all."""

from __future__ import annotations

import math
import re

import pytest

from mmaudio.weights import (
    CheckpointIdentity,
    component_of_kind,
    describe_checkpoint,
    identify_checkpoint,
    identify_components,
    identify_file,
)
from tests.parity.cases import load_manifest
from tests.weights_factory import (
    MANIFESTS,
    NETWORKS,
    is_sparse,
    manifest_shapes,
    scaled_shapes,
    write_sparse_safetensors,
)

# What each published file is: (kind, variant, mode). Networks take theirs from the manifest itself below.
PUBLISHED = {
    "vae_16k": ("vae", "v1-16", "16k"),
    "vae_44k": ("vae", "v1-44", "44k"),
    "vocoder_16k": ("vocoder", "bigvgan_v1_16k", "16k"),
    "vocoder_44k": ("vocoder", "bigvgan_v2_44k", "44k"),
    "synchformer": ("synchformer", "motionformer_224_16x4", None),
    "clip": ("clip", "dfn5b_vit_h_14_378", None),
}
MODE_WORDS = {"16k": "16 kHz", "44k": "44.1 kHz"}


def expected_identity(component: str) -> tuple[str, str, str | None]:
    if component in NETWORKS:
        manifest = load_manifest(MANIFESTS[component])
        return "network", manifest["model"], manifest["companions"]["mode"]
    return PUBLISHED[component]


def nested(shapes: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in shapes.items()}


# ---- the published files, at full size, from the manifests -------------------------------------------------------

@pytest.mark.parametrize("component", list(MANIFESTS))
def test_published_file_is_identified(component: str) -> None:
    kind, variant, mode = expected_identity(component)
    identity = identify_checkpoint(manifest_shapes(component))
    assert (identity.kind, identity.variant, identity.mode) == (kind, variant, mode)
    assert identity.problems == ()
    assert identity.num_params == sum(math.prod(s) for s in manifest_shapes(component).values())
    if mode is not None:
        assert MODE_WORDS[mode] in identity.description


@pytest.mark.parametrize("component", NETWORKS)
def test_network_hyperparameters_match_the_manifest_constructor(component: str) -> None:
    constructor = load_manifest(MANIFESTS[component])["constructor"]
    details = identify_checkpoint(manifest_shapes(component)).details
    for key in ("latent_dim", "hidden_dim", "depth", "fused_depth", "num_heads", "v2", "clip_dim", "sync_dim",
                "text_dim"):
        assert details[key] == constructor[key], key


def test_vae_description_names_its_mode_and_layout() -> None:
    description = identify_checkpoint(manifest_shapes("vae_44k")).description
    assert description.startswith("MMAudio VAE, 44.1 kHz")
    assert "v1-44.pth layout" in description


@pytest.mark.parametrize("component", ["vocoder_16k", "vocoder_44k"])
def test_vocoder_hyperparameters_match_the_manifest_constructor(component: str) -> None:
    constructor = load_manifest(MANIFESTS[component])["constructor"]
    details = identify_checkpoint(manifest_shapes(component)).details
    assert details["num_mels"] == constructor["num_mels"]
    assert details["upsample_rates"] == constructor["upsample_rates"]
    assert details["upsample_kernel_sizes"] == constructor["upsample_kernel_sizes"]
    assert details["use_bias_at_final"] == constructor["use_bias_at_final"]


def test_full_size_network_files_are_identified_from_their_header(tmp_path) -> None:
    """Kijai-layout safetensors at full size: sparse files, so gigabytes of zeros take no disk space."""
    for component in NETWORKS:
        path = write_sparse_safetensors(manifest_shapes(component), tmp_path / f"{component}.safetensors")
        if not is_sparse(path):
            path.unlink()
            pytest.skip("this file system does not store sparse files; full-size headers are covered above")
        kind, variant, mode = expected_identity(component)
        identity = identify_file(path)
        assert (identity.kind, identity.variant, identity.mode) == (kind, variant, mode)
        assert "[safetensors, fp16]" in identity.description
        path.unlink()


# ---- the same files in other layouts -----------------------------------------------------------------------

@pytest.mark.parametrize("component", ["vocoder_16k", "vocoder_44k"])
def test_bigvgan_nested_under_generator(component: str) -> None:
    kind, variant, mode = expected_identity(component)
    identity = identify_checkpoint(nested(manifest_shapes(component), "generator."))
    assert (identity.kind, identity.variant, identity.mode) == (kind, variant, mode)
    assert identity.prefix == "generator."
    assert identity.canonical_name("generator.conv_pre.weight_v") == "conv_pre.weight_v"
    assert "nested under 'generator'" in identity.description


@pytest.mark.parametrize("component", ["vocoder_16k", "vocoder_44k"])
def test_bigvgan_weight_norm_spellings(component: str) -> None:
    """Legacy weight_g/weight_v, torch parametrizations (the manifest's renaming rule) and folded weights."""
    manifest = load_manifest(MANIFESTS[component])
    assert "parametrizations.weight.original0" in manifest["reference_module_key_names"]["rule"]
    shapes = manifest_shapes(component)
    parametrized = {
        k.replace(".weight_g", ".parametrizations.weight.original0").replace(
            ".weight_v", ".parametrizations.weight.original1"): v for k, v in shapes.items()
    }
    folded = {k.replace(".weight_v", ".weight"): v for k, v in shapes.items() if not k.endswith(".weight_g")}
    expected = expected_identity(component)
    for layout, style in ((shapes, "weight_g/weight_v"), (parametrized, "parametrizations"), (folded, "fused")):
        identity = identify_checkpoint(layout)
        assert (identity.kind, identity.variant, identity.mode) == expected
        assert identity.details["weight_norm"] == style


def test_synchformer_full_file_with_audio_branch_and_bare_encoder() -> None:
    shapes = manifest_shapes("synchformer")
    with_audio = {**shapes, "afeat_extractor.patch_embed.proj.weight": (768, 1, 16, 16), "aproj.weight": (768, 768),
                  "transformer.head.weight": (21, 768)}
    identity = identify_checkpoint(with_audio)
    assert identity.kind == "synchformer"
    assert identity.details["has_audio_branch"]
    assert not identity.owns("afeat_extractor.patch_embed.proj.weight")  # the unused branch is not loaded
    assert identity.canonical_name("vfeat_extractor.cls_token") == "vfeat_extractor.cls_token"

    bare = {k.removeprefix("vfeat_extractor."): v for k, v in shapes.items()}
    bare_identity = identify_checkpoint(bare)
    assert (bare_identity.kind, bare_identity.variant) == ("synchformer", "motionformer_224_16x4")
    assert bare_identity.canonical_name("cls_token") == "vfeat_extractor.cls_token"

    wrapped = identify_checkpoint(nested(with_audio, "model."))
    assert wrapped.canonical_name("model.vfeat_extractor.pos_embed") == "vfeat_extractor.pos_embed"


def test_clip_with_logit_scale_of_shape_one_and_prefix() -> None:
    shapes = {**manifest_shapes("clip"), "logit_scale": (1,)}
    identity = identify_checkpoint(nested(shapes, "clip."))
    assert (identity.kind, identity.variant) == ("clip", "dfn5b_vit_h_14_378")
    assert identity.problems == ()
    assert any("logit_scale" in note for note in identity.notes)


def test_image_tower_only_clip_is_recognised_but_not_loadable() -> None:
    shapes = {k: v for k, v in manifest_shapes("clip").items() if k.startswith("visual.")}
    identity = identify_checkpoint(shapes)
    assert identity.kind == "clip"
    assert any("text tower" in p for p in identity.problems)


def test_vae_and_vocoder_in_one_file() -> None:
    """ComfyUI core's combined 16 kHz layout: vae.* and vocoder.* in one state dict."""
    shapes = {**nested(manifest_shapes("vae_16k"), "vae."), **nested(manifest_shapes("vocoder_16k"), "vocoder.")}
    components = identify_components(shapes)
    assert [(c.kind, c.mode, c.prefix) for c in components] == [("vae", "16k", "vae."), ("vocoder", "16k", "vocoder.")]
    main = identify_checkpoint(shapes)
    assert main.kind == "vae" and "BigVGAN v1" in main.description
    assert component_of_kind(shapes, "vocoder").variant == "bigvgan_v1_16k"


def test_decoder_only_vae() -> None:
    shapes = {k: v for k, v in manifest_shapes("vae_44k").items() if not k.startswith("encoder.")}
    identity = identify_checkpoint(shapes)
    assert (identity.kind, identity.mode) == ("vae", "44k")
    assert identity.details["has_encoder"] is False
    assert "decoder only" in describe_checkpoint(shapes)


def test_training_style_wrappers_are_seen_through() -> None:
    for prefix in ("state_dict.", "model.", "module.", "ema.ema_model."):
        identity = identify_checkpoint(nested(manifest_shapes("small_16k"), prefix))
        assert (identity.kind, identity.variant, identity.prefix) == ("network", "small_16k", prefix)


# ---- scaled-down files (what the tests write to disk) and fine-tune-like variations -------------------------------

@pytest.mark.parametrize("component", list(MANIFESTS))
def test_scaled_copies_keep_kind_and_mode(component: str) -> None:
    kind, variant, mode = expected_identity(component)
    identity = identify_checkpoint(scaled_shapes(component))
    assert (identity.kind, identity.mode) == (kind, mode)
    assert identity.problems == (), identity.problems
    if kind == "vocoder":  # vocoder identity does not depend on the widths
        assert identity.variant == variant
    else:
        assert identity.variant == "custom" if kind in ("network", "vae", "synchformer") else "open_clip_other"


@pytest.mark.parametrize("component", NETWORKS)
def test_scaled_networks_keep_their_architecture(component: str) -> None:
    full = identify_checkpoint(manifest_shapes(component)).details
    small = identify_checkpoint(scaled_shapes(component)).details
    for key in ("latent_dim", "depth", "fused_depth", "v2", "clip_dim", "sync_dim", "text_dim"):
        assert small[key] == full[key], key


def test_network_with_a_missing_tensor_is_recognised_but_not_loadable() -> None:
    shapes = {k: v for k, v in manifest_shapes("large_44k_v2").items() if k != "latent_mean"}
    identity = identify_checkpoint(shapes)
    assert identity.kind == "network"
    assert any("latent_mean" in p for p in identity.problems)
    assert "cannot be loaded" in describe_checkpoint(shapes).lower()


def test_network_with_another_latent_size_has_no_mode() -> None:
    shapes = dict(scaled_shapes("small_16k"))
    for key, shape in list(shapes.items()):
        shapes[key] = tuple(8 if (d == 20 and ("audio_input" in key or "final_layer.conv" in key or "latent" in key))
                            else d for d in shape)
    identity = identify_checkpoint(shapes)
    assert identity.kind == "network" and identity.mode is None
    assert any("latent size 8" in n for n in identity.notes)


def test_other_bigvgan_is_not_taken_for_an_mmaudio_vocoder() -> None:
    shapes = {k: (tuple(100 if d == 80 else d for d in v) if k.startswith("conv_pre.") else v)
              for k, v in manifest_shapes("vocoder_16k").items()}
    identity = identify_checkpoint(shapes)
    assert (identity.kind, identity.variant, identity.mode) == ("vocoder", "bigvgan_other", None)


# ---- not MMAudio ------------------------------------------------------------------------------------------------

def test_unknown_files_say_what_they_hold() -> None:
    empty = identify_checkpoint({})
    assert empty.kind == "unknown" and "no tensors" in empty.description
    sd_vae = {"decoder.conv_in.weight": (512, 4, 3, 3), "encoder.conv_in.weight": (128, 3, 3, 3)}
    assert identify_checkpoint(sd_vae).kind == "unknown"
    hf_clip = {"vision_model.embeddings.patch_embedding.weight": (1280, 3, 14, 14),
               "text_model.embeddings.token_embedding.weight": (49408, 1024)}
    unknown = identify_checkpoint(hf_clip)
    assert unknown.kind == "unknown" and "open_clip" in unknown.description
    assert re.search(r"2 tensors", unknown.description)


def test_identity_type() -> None:
    identity = identify_checkpoint(manifest_shapes("small_16k"))
    assert isinstance(identity, CheckpointIdentity) and identity.is_known
    with pytest.raises(ValueError, match="kind must be one of"):
        component_of_kind({}, "decoder")


def test_agrees_with_the_model_packages_own_detector() -> None:
    """The network builder (model package) and this identification must name the same variants."""
    model = pytest.importorskip("mmaudio.model")
    for component in NETWORKS:
        config = model.config_from_state_dict(manifest_shapes(component))
        identity = identify_checkpoint(manifest_shapes(component))
        assert (config.name, config.mode) == (identity.variant, identity.mode)
        assert config.v2 == identity.details["v2"]
