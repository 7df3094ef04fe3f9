"""The five published networks: exact state_dict layout, parameter counts, detection from shapes, and clear
errors for files that are not flow networks."""

from __future__ import annotations

import math
import re

import pytest
import torch

from mmaudio.errors import WrongCheckpointError
from mmaudio.model import VARIANTS, MMAudioNetwork, NetworkConfig, build_network_from_state_dict, config_from_state_dict
from tests.parity.cases import load_manifest

EXPECTED_FILES = [f"mmaudio_{name}.pth" for name in VARIANTS]
# Other components' manifests and a word their description should contain.
OTHER_COMPONENTS = {
    "vae_v1-16.json": r"vae",
    "vae_v1-44.json": r"vae",
    "bigvgan_v2_44k.json": r"bigvgan|vocoder",
    "bigvgan_16k_best_netG.json": r"bigvgan|vocoder",
    "synchformer.json": r"synchformer",
    "clip_dfn5b_vit_h_14_384.json": r"clip",
}


def _manifest_shapes(manifest: dict) -> dict[str, tuple[int, ...]]:
    return {key: tuple(entry["shape"]) for key, entry in manifest["keys"].items()}


def _meta_network(config: NetworkConfig) -> MMAudioNetwork:
    with torch.device("meta"):
        return MMAudioNetwork(config)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_state_dict_equals_manifest(name: str) -> None:
    manifest = load_manifest(f"mmaudio_{name}.json")
    state = _meta_network(VARIANTS[name]).state_dict()
    ours = {key: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for key, t in state.items()}
    expected = {key: (tuple(e["shape"]), e["dtype"]) for key, e in manifest["keys"].items()}
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}
    assert len(ours) == manifest["num_keys"]
    assert sum(math.prod(shape) for shape, _ in ours.values()) == manifest["params"]
    for dropped in manifest["keys_dropped_by_load_weights"]["keys"]:
        assert dropped not in ours


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_hyperparameters_follow_manifest(name: str) -> None:
    manifest = load_manifest(f"mmaudio_{name}.json")
    from_manifest = NetworkConfig.from_constructor(manifest["constructor"])
    assert from_manifest.architecture() == VARIANTS[name].architecture()
    config = VARIANTS[name]
    assert (config.latent_seq_len, config.clip_seq_len, config.sync_seq_len) == (
        manifest["constructor"]["latent_seq_len"], manifest["constructor"]["clip_seq_len"],
        manifest["constructor"]["sync_seq_len"])
    assert config.mode == manifest["companions"]["mode"]
    derived = manifest["derived"]
    assert config.head_dim == derived["head_dim"]
    assert config.timestep_frequency_dim == derived["t_embed_frequency_embedding_size"]
    assert config.timestep_max_period == derived["t_embed_max_period"]
    net = _meta_network(config)
    assert list(net.latent_rot.shape) == derived["latent_rot_shape"]
    assert list(net.clip_rot.shape) == derived["clip_rot_shape"]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_detects_every_variant_from_shapes(name: str) -> None:
    manifest = load_manifest(f"mmaudio_{name}.json")
    detected = config_from_state_dict(_manifest_shapes(manifest))
    assert detected.name == name
    assert detected == VARIANTS[name]
    # Files that still carry the reference's recomputed buffers, or sit under a wrapper prefix, are the same.
    with_buffers = dict(_manifest_shapes(manifest))
    with_buffers.update({k: tuple(v) for k, v in manifest["keys_dropped_by_load_weights"]["keys"].items()})
    assert config_from_state_dict(with_buffers).name == name
    prefixed = {f"model.{k}": v for k, v in _manifest_shapes(manifest).items()}
    assert config_from_state_dict(prefixed).name == name


def test_medium_is_not_large_and_v1_is_not_v2() -> None:
    names = {name: config_from_state_dict(_manifest_shapes(load_manifest(f"mmaudio_{name}.json"))).name
             for name in ("medium_44k", "large_44k", "large_44k_v2")}
    assert names == {"medium_44k": "medium_44k", "large_44k": "large_44k", "large_44k_v2": "large_44k_v2"}


@pytest.mark.parametrize("manifest_name", list(OTHER_COMPONENTS))
def test_other_components_are_rejected_with_a_helpful_message(manifest_name: str) -> None:
    manifest = load_manifest(manifest_name)
    with pytest.raises(WrongCheckpointError) as info:
        config_from_state_dict(_manifest_shapes(manifest))
    message = str(info.value)
    assert re.search(OTHER_COMPONENTS[manifest_name], message, re.IGNORECASE), message
    for file_name in EXPECTED_FILES:
        assert file_name in message


def test_incomplete_network_is_rejected() -> None:
    shapes = _manifest_shapes(load_manifest("mmaudio_small_16k.json"))
    broken = {k: v for k, v in shapes.items() if not k.startswith("fused_blocks.3.")}
    with pytest.raises(WrongCheckpointError, match="fused_blocks"):
        config_from_state_dict(broken)
    reshaped = dict(shapes)
    reshaped["joint_blocks.0.latent_block.ffn.w1.weight"] = (999, 448, 3)
    with pytest.raises(WrongCheckpointError, match="other shapes"):
        config_from_state_dict(reshaped)
    no_mean = {k: v for k, v in shapes.items() if k != "latent_mean"}
    with pytest.raises(WrongCheckpointError, match="latent_mean"):
        config_from_state_dict(no_mean)


def test_consistent_custom_layout_is_accepted() -> None:
    custom = VARIANTS["small_44k"].replace(name="custom", depth=10, fused_depth=6)
    shapes = {k: tuple(v.shape) for k, v in _meta_network(custom).state_dict().items()}
    detected = config_from_state_dict(shapes)
    assert detected.name == "custom"
    assert detected.architecture() == custom.architecture()
    assert detected.mode == "44k"


@pytest.mark.parametrize("name", ["small_16k", "large_44k_v2"])
def test_build_from_meta_state_dict_assigns_every_tensor(name: str) -> None:
    manifest = load_manifest(f"mmaudio_{name}.json")
    shapes = _manifest_shapes(manifest)
    state = {k: torch.empty(shape, dtype=torch.float16, device="meta") for k, shape in shapes.items()}
    state["t_embed.freqs"] = torch.empty(manifest["keys_dropped_by_load_weights"]["keys"]["t_embed.freqs"])
    net = build_network_from_state_dict(state)
    assert net.config.name == name
    assert all(p.dtype == torch.float16 for p in net.state_dict().values())
    assert not any(p.requires_grad for p in net.parameters())
    assert net.t_embed.sinusoid(torch.zeros(1)).dtype == torch.float32  # recomputed, not taken from the file


def test_loaded_network_computes_like_the_original() -> None:
    torch.manual_seed(0)
    config = NetworkConfig(name="tiny", latent_dim=8, clip_dim=24, sync_dim=16, text_dim=20, hidden_dim=32, depth=3,
                           fused_depth=1, num_heads=2, v2=True, mode="44k", latent_seq_len=44, clip_seq_len=8,
                           sync_seq_len=16, text_seq_len=10)
    net = MMAudioNetwork(config).eval()
    with torch.no_grad():
        for param in net.parameters():
            param.normal_(0, 0.2)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["latent_rot"] = net.latent_rot  # what an older file might carry; ignored
    loaded = build_network_from_state_dict(state)
    assert loaded.config.architecture() == config.architecture()
    loaded.update_seq_lengths(44, 8, 16)  # a checkpoint does not carry the duration
    inputs = (torch.randn(2, 44, 8), torch.randn(2, 8, 24), torch.randn(2, 16, 16), torch.randn(2, 10, 20),
              torch.rand(2))
    with torch.no_grad():
        assert torch.equal(net(*inputs), loaded(*inputs))


def test_error_message_without_the_identify_module(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "mmaudio.weights.identify", None)  # import fails -> built-in description
    with pytest.raises(WrongCheckpointError) as info:
        config_from_state_dict(_manifest_shapes(load_manifest("vae_v1-44.json")))
    assert "VAE" in str(info.value) and "v1-44.pth" in str(info.value)
    assert "mmaudio_large_44k_v2.pth" in str(info.value)


def test_every_layer_is_built_through_ops() -> None:
    from types import SimpleNamespace

    from mmaudio.ops import default_ops

    base = default_ops()
    made: list[str] = []

    def recording(cls: type) -> type:
        class Recording(cls):  # type: ignore[misc, valid-type]
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, **kwargs)
                made.append(cls.__name__)

        return Recording

    ops = SimpleNamespace(**{name: recording(getattr(base, name)) for name in vars(base)})
    with torch.device("meta"):
        net = MMAudioNetwork(VARIANTS["small_16k"], ops=ops)
    layer_types = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.LayerNorm, torch.nn.Embedding)
    layers = [m for m in net.modules() if isinstance(m, layer_types)]
    assert layers and len(layers) == len(made)
    assert all(any(isinstance(m, getattr(ops, name)) for name in vars(ops)) for m in layers)
