"""Stand-in for ComfyUI's ``folder_paths``: named model folders, each a list of paths plus allowed extensions.

Tests point ``models_dir`` at a temporary folder with :func:`reset`. An entry created by
:func:`add_model_folder_path` for a new name allows every extension (an empty set), as in ComfyUI.
"""

from __future__ import annotations

import os

supported_pt_extensions: set[str] = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
models_dir: str = os.path.join(os.getcwd(), "models")
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}


def reset(new_models_dir: str) -> None:
    """Forget every folder and use ``new_models_dir`` as ComfyUI's models directory (tests only)."""
    global models_dir
    models_dir = new_models_dir
    folder_names_and_paths.clear()
    folder_names_and_paths["checkpoints"] = ([os.path.join(models_dir, "checkpoints")], set(supported_pt_extensions))


def map_legacy(folder_name: str) -> str:
    return {"unet": "diffusion_models", "clip": "text_encoders"}.get(folder_name, folder_name)


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    folder_name = map_legacy(folder_name)
    if folder_name not in folder_names_and_paths:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())
        return
    paths = folder_names_and_paths[folder_name][0]
    if full_folder_path in paths:
        if is_default:
            paths.remove(full_folder_path)
            paths.insert(0, full_folder_path)
    elif is_default:
        paths.insert(0, full_folder_path)
    else:
        paths.append(full_folder_path)


def get_folder_paths(folder_name: str) -> list[str]:
    return list(folder_names_and_paths[map_legacy(folder_name)][0])


def get_filename_list(folder_name: str) -> list[str]:
    """Relative paths of the files under every path of ``folder_name`` that carry an allowed extension."""
    paths, extensions = folder_names_and_paths[map_legacy(folder_name)]
    found: set[str] = set()
    for root in paths:
        if not os.path.isdir(root):
            continue
        for dirpath, _dirs, files in os.walk(root, followlinks=True):
            for file in files:
                relative = os.path.relpath(os.path.join(dirpath, file), root)
                if not extensions or os.path.splitext(file)[1].lower() in extensions:
                    found.add(relative)
    return sorted(found)


def get_full_path(folder_name: str, filename: str) -> str | None:
    folder_name = map_legacy(folder_name)
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for root in folder_names_and_paths[folder_name][0]:
        candidate = os.path.join(root, filename)
        if os.path.isfile(candidate):
            return candidate
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    full_path = get_full_path(folder_name, filename)
    if full_path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full_path
