"""The ``models/mmaudio`` folder: registration with ``folder_paths`` and the files each loader may offer.

Paths a user configured for ``mmaudio`` in ``extra_model_paths.yaml`` are parsed before packs load; they are kept
and the default folder is appended after them. Another pack (kijai's) may use the same folder name: its entry is
extended, never replaced, and its extension filter is left alone. The loaders list files with the library's own
scan of these folders (by file contents), not with ComfyUI's extension filter.
"""

from __future__ import annotations

import os

import folder_paths

FOLDER_NAME = "mmaudio"


def register_model_folder() -> None:
    """Make ``models/mmaudio`` (and every path already configured for it) a ComfyUI model folder. Idempotent."""
    default = os.path.join(folder_paths.models_dir, FOLDER_NAME)
    entry = folder_paths.folder_names_and_paths.get(FOLDER_NAME)
    if entry is None:
        folder_paths.folder_names_and_paths[FOLDER_NAME] = ([default], set(folder_paths.supported_pt_extensions))
    elif default not in entry[0]:
        entry[0].append(default)


def folder_paths_list() -> list[str]:
    register_model_folder()
    return folder_paths.get_folder_paths(FOLDER_NAME)


def resolve(name: str, what: str) -> str:
    """Full path of ``name`` in the ``mmaudio`` folders, or a FileNotFoundError naming the folders searched."""
    register_model_folder()
    path = folder_paths.get_full_path(FOLDER_NAME, name) if name else None
    if path is None:
        searched = ", ".join(folder_paths.get_folder_paths(FOLDER_NAME))
        raise FileNotFoundError(f"{what}: file {name!r} not found in the {FOLDER_NAME} model folders ({searched})")
    return path
