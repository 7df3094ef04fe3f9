"""``models/mmaudio`` registration: user paths from extra_model_paths.yaml and other packs' entries survive."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from .comfy_stub import tiny_weights
from .pack_loader import PACK_NAME, stubbed_pack


@pytest.fixture
def env(tmp_path):
    with stubbed_pack(tmp_path / "models") as pack:
        yield pack, sys.modules["folder_paths"], sys.modules[f"{PACK_NAME}.nodes.model_folder"]


def _adapters():
    return sys.modules[f"{PACK_NAME}.nodes.adapters"]


def test_fresh_registration_and_listing_by_contents(env, tmp_path):
    _, folder_paths, model_folder = env
    model_folder.register_model_folder()
    default = os.path.join(folder_paths.models_dir, "mmaudio")
    assert folder_paths.get_folder_paths("mmaudio") == [default]
    os.makedirs(os.path.join(default, "sub"))
    tiny_weights.write_vae(Path(default) / "sub" / "renamed_network.safetensors")  # a VAE, whatever its name
    tiny_weights.write_vocoder(Path(default) / "voc.safetensors")
    for name in ("config.json", "readme.txt"):
        open(os.path.join(default, name), "wb").close()
    assert _adapters().files_of_kind("vae") == ["sub/renamed_network.safetensors"]
    assert _adapters().files_of_kind("vocoder") == ["voc.safetensors"]
    assert _adapters().files_of_kind("network") == []
    assert model_folder.resolve("sub/renamed_network.safetensors", "VAE").endswith("renamed_network.safetensors")


def test_yaml_paths_are_kept_and_the_default_appended(env, tmp_path):
    _, folder_paths, model_folder = env
    user = str(tmp_path / "my_models")
    folder_paths.add_model_folder_path("mmaudio", user)  # what extra_model_paths.yaml does before packs load
    model_folder.register_model_folder()
    model_folder.register_model_folder()  # idempotent
    default = os.path.join(folder_paths.models_dir, "mmaudio")
    assert folder_paths.get_folder_paths("mmaudio") == [user, default]


def test_another_packs_entry_is_extended_not_replaced(env, tmp_path):
    _, folder_paths, model_folder = env
    other = str(tmp_path / "kijai")
    folder_paths.folder_names_and_paths["mmaudio"] = ([other], set())  # e.g. registered first by kijai's pack
    os.makedirs(os.path.join(other, "nvidia"))
    open(os.path.join(other, "nvidia", "config.json"), "wb").close()
    tiny_weights.write_vocoder(Path(other) / "their_vocoder.safetensors")
    model_folder.register_model_folder()
    paths, extensions = folder_paths.folder_names_and_paths["mmaudio"]
    assert paths[0] == other and len(paths) == 2
    assert extensions == set(), "the other pack's extension filter is left alone"
    assert _adapters().files_of_kind("vocoder") == ["their_vocoder.safetensors"]


def test_entry_point_registers_the_folder(env):
    import asyncio

    pack, folder_paths, _ = env
    folder_paths.folder_names_and_paths.pop("mmaudio", None)
    asyncio.run(pack.comfy_entrypoint())
    assert "mmaudio" in folder_paths.folder_names_and_paths


def test_unreadable_weight_files_are_skipped_when_listing(env):
    _, folder_paths, model_folder = env
    adapters = _adapters()
    model_folder.register_model_folder()
    default = folder_paths.get_folder_paths("mmaudio")[0]
    os.makedirs(default, exist_ok=True)
    with open(os.path.join(default, "truncated.safetensors"), "wb") as handle:
        handle.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    assert adapters.files_of_kind("network") == []
