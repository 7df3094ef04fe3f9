"""``models/mmaudio`` registration: user paths from extra_model_paths.yaml and other packs' entries survive."""

from __future__ import annotations

import os
import sys

import pytest

from .pack_loader import PACK_NAME, stubbed_pack


@pytest.fixture
def env(tmp_path):
    with stubbed_pack(tmp_path / "models") as pack:
        yield pack, sys.modules["folder_paths"], sys.modules[f"{PACK_NAME}.nodes.model_folder"]


def test_fresh_registration_lists_weight_files_only(env, tmp_path):
    _, folder_paths, model_folder = env
    model_folder.register_model_folder()
    default = os.path.join(folder_paths.models_dir, "mmaudio")
    assert folder_paths.get_folder_paths("mmaudio") == [default]
    os.makedirs(os.path.join(default, "sub"))
    for name in ("a.safetensors", "b.pth", "sub/c.pt", "config.json", "readme.txt"):
        open(os.path.join(default, name), "wb").close()
    assert model_folder.weight_files() == ["a.safetensors", "b.pth", os.path.join("sub", "c.pt")]


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
    os.makedirs(other)
    for name in ("net.safetensors", "nvidia/config.json"):
        os.makedirs(os.path.dirname(os.path.join(other, name)), exist_ok=True)
        open(os.path.join(other, name), "wb").close()
    model_folder.register_model_folder()
    paths, extensions = folder_paths.folder_names_and_paths["mmaudio"]
    assert paths[0] == other and len(paths) == 2
    assert extensions == set(), "the other pack's extension filter is left alone"
    assert model_folder.weight_files() == ["net.safetensors"]


def test_entry_point_registers_the_folder(env):
    import asyncio

    pack, folder_paths, _ = env
    folder_paths.folder_names_and_paths.pop("mmaudio", None)
    asyncio.run(pack.comfy_entrypoint())
    assert "mmaudio" in folder_paths.folder_names_and_paths


def test_unreadable_weight_files_are_skipped_when_listing(env):
    _, folder_paths, model_folder = env
    adapters = sys.modules[f"{PACK_NAME}.nodes.adapters"]
    model_folder.register_model_folder()
    default = folder_paths.get_folder_paths("mmaudio")[0]
    os.makedirs(default, exist_ok=True)
    with open(os.path.join(default, "truncated.safetensors"), "wb") as handle:
        handle.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    assert adapters.files_of_kind("network") == []
