"""The download node: fetch the published weights of one MMAudio variant into ``models/mmaudio``, when queued.

Nothing is fetched at import or when ComfyUI lists the nodes: only running this output node downloads, and only
files that are not already in an ``mmaudio`` model folder (name and published size). Downloads go to the first
``mmaudio`` folder through the library's checked download (staging folder, size and SHA-256 verification), with a
byte-level progress bar. Cancel stops the node and the transfer (a child process) at once; the partial download
lives only in the library's hidden staging folder, which is deleted before the node stops, so no loader ever sees
it. ``HF_HUB_OFFLINE`` is honoured: nothing is downloaded and the error lists every missing file, its repository
and the folder for it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from comfy_api.latest import io, ui

from ..mmaudio.errors import InvalidInputError, MMAudioError
from ..mmaudio.weights import (
    KnownFile,
    MissingWeightsError,
    download_known_file,
    files_for_variant,
    hub_offline,
    known_file,
    known_files,
    missing_file_message,
)
from . import model_folder
from .progress import NodeProgress

log = logging.getLogger(__name__)

CATEGORY = "audio/MMAudio"
NODE_ID = "MMAudioSyncDownloadWeights"
DISPLAY_NAME = "MMAudio Download Weights"

DEFAULT_VARIANT = "large_44k_v2"
# Layout shown in the dropdown -> files_for_variant's ``prefer``.
LAYOUTS: dict[str, str] = {
    "original .pth": "original",
    "Kijai fp16 safetensors": "fp16",
    "Kijai fp32 safetensors": "fp32",
}
DEFAULT_LAYOUT = "Kijai fp16 safetensors"
# Boolean input -> the catalogue kinds it stands for, in download order.
COMPONENTS: dict[str, tuple[str, ...]] = {
    "network": ("network",),
    "decoder": ("vae", "vocoder"),
    "feature_models": ("clip", "synchformer"),
}
ROLE_NAMES = {"network": "network", "vae": "VAE", "vocoder": "vocoder", "clip": "CLIP", "synchformer": "Synchformer"}
_DISK_MARGIN = 256 * 1024**2  # keep this much free beyond the files themselves


def variants() -> list[str]:
    """The published network variants, in catalogue order (small_16k ... large_44k_v2)."""
    return list(dict.fromkeys(f.variant for f in known_files("network") if f.variant))


# ---- plan: which files, and which of them are already there -------------------------------------------------------
@dataclass(frozen=True)
class PlannedFile:
    """One file of the request: where it is (if present with the published size) or where it will go."""

    entry: KnownFile
    role: str
    folder: Path  # the mmaudio folder it lives in or will be fetched into
    present: Path | None = None
    conflict: Path | None = None  # a file of the same name but another size in ``folder``: left untouched

    @property
    def missing(self) -> bool:
        return self.present is None and self.conflict is None


def _planned(entry: KnownFile, role: str, folders: list[Path], target_folder: Path) -> PlannedFile:
    """``entry`` found in ``folders`` with its published size, else due in ``target_folder`` (unless a file of
    the same name but another size is in the way there)."""
    for folder in folders:
        candidate = folder / entry.local_path
        if candidate.is_file() and entry.size_matches(candidate.stat().st_size):
            return PlannedFile(entry, role, folder, present=candidate)
    target = target_folder / entry.local_path
    return PlannedFile(entry, role, target_folder, conflict=target if target.is_file() else None)


def plan_files(variant: str, layout: str, kinds: Iterable[str], folders: list[Path]) -> tuple[list[PlannedFile],
                                                                                               list[str]]:
    """The files of ``variant`` in ``layout`` for catalogue ``kinds``, each located in ``folders``; plus notes.

    A file's companions (BigVGAN's config.json) must lie beside it, so they are looked for, and fetched, in the
    folder where their file is. A component without a file in the requested layout falls back to the original
    release (files_for_variant's order); the notes say so.
    """
    if layout not in LAYOUTS:
        raise InvalidInputError(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    if not folders:
        raise MMAudioError("no mmaudio model folder is configured")
    prefer = LAYOUTS[layout]
    chosen = files_for_variant(variant, prefer=prefer)
    planned: list[PlannedFile] = []
    notes: list[str] = []
    for kind in kinds:
        entry = chosen[kind]
        role = ROLE_NAMES.get(kind, kind)
        if prefer != "original" and not (entry.source == "kijai" and entry.storage == prefer):
            notes.append(f"No {layout} {role} is published for {variant}: {entry.name} "
                         f"({entry.repo_id}) is used instead.")
        main = _planned(entry, role, folders, folders[0])
        for companion_id in entry.companions:
            planned.append(_planned(known_file(companion_id), f"{role} config", [main.folder], main.folder))
        planned.append(main)
    return planned, notes


def selected_kinds(network: bool, decoder: bool, feature_models: bool) -> list[str]:
    flags = {"network": network, "decoder": decoder, "feature_models": feature_models}
    if not any(flags.values()):
        raise InvalidInputError("network, decoder, feature_models: all are off; switch on at least one component")
    return [kind for name, on in flags.items() if on for kind in COMPONENTS[name]]


# ---- messages -------------------------------------------------------------------------------------------------------
def format_size(size: int | None) -> str:
    if size is None:
        return "size unknown"
    for unit, scale in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size} bytes"


def offline_message(missing: list[PlannedFile]) -> str:
    folders = sorted({str(p.folder) for p in missing})
    lines = [f"HF_HUB_OFFLINE is set, so nothing is downloaded. {len(missing)} file(s) are missing from "
             f"{' and '.join(folders)}:"]
    lines += [f"- {p.role}: {missing_file_message(p.entry, p.folder)}" for p in missing]
    lines.append("Put them there (same sub-folders), or unset HF_HUB_OFFLINE and run this node again.")
    return "\n".join(lines)


def _line(status: str, planned: PlannedFile, path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    return f"{status:<8} {planned.entry.local_path}  ({planned.role}, {format_size(size)})  in {planned.folder}"


def _conflict_line(planned: PlannedFile) -> str:
    path = planned.conflict
    assert path is not None
    expected = planned.entry.size if planned.entry.size is not None else f"about {planned.entry.approx_size}"
    return (f"KEPT     {planned.entry.local_path}  ({planned.role}): {path} has {path.stat().st_size} bytes, the "
            f"published file has {expected}. It was left untouched (your own file, or an incomplete one: delete or "
            "rename it and run this node again to fetch the published file).")


# ---- fetching -------------------------------------------------------------------------------------------------------
def _hub_endpoint() -> str | None:
    """HF_ENDPOINT read now (huggingface_hub reads it once, at its import)."""
    return os.environ.get("HF_ENDPOINT") or None


def _check_disk_space(missing: list[PlannedFile]) -> None:
    needed: dict[Path, int] = {}
    for planned in missing:
        needed[planned.folder] = needed.get(planned.folder, 0) + (planned.entry.expected_bytes or 0)
    for folder, size in needed.items():
        existing = folder
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        free = shutil.disk_usage(existing).free
        if free < size + _DISK_MARGIN:
            raise MMAudioError(f"Not enough disk space in {folder}: the missing files need {format_size(size)}, "
                               f"only {format_size(free)} is free")


def fetch_missing(missing: list[PlannedFile]) -> list[Path]:
    """Download ``missing`` in order under one progress bar over their bytes; the local paths, in order.

    An error names what was already fetched; an interrupt (ComfyUI's Cancel, raised by the progress bar) stops at
    once and the library removes the partial download.
    """
    sizes = [planned.entry.expected_bytes or 0 for planned in missing]
    bar = NodeProgress(sum(sizes))
    bar.set(0)
    paths: list[Path] = []
    start = 0
    for planned, units in zip(missing, sizes, strict=True):
        def report(stage: str, done: int, total: int | None, start: int = start, units: int = units) -> None:
            if stage == "download":
                bar.set(start + min(max(done, 0), units))
            else:  # verifying the checksum: the bar waits, Cancel still works
                bar.set(bar.done)

        log.info("MMAudio Sync: fetching %s from %s into %s", planned.entry.filename, planned.entry.repo_id,
                 planned.folder)
        try:
            path = download_known_file(planned.entry, planned.folder, progress=report, endpoint=_hub_endpoint(),
                                       with_companions=False)
        except MMAudioError as exc:
            done = [_line("fetched", p, fetched) for p, fetched in zip(missing, paths, strict=False)]
            kept = "\nFetched before this error (kept):\n" + "\n".join(done) if done else ""
            raise type(exc)(f"{exc}{kept}") from exc
        except OSError as exc:
            raise MMAudioError(f"Could not write {planned.entry.local_path} into {planned.folder}: {exc}") from exc
        paths.append(path)
        start += units
        bar.set(start)
    bar.finish()
    return paths


def download_weights(variant: str, layout: str, network: bool, decoder: bool, feature_models: bool) -> str:
    """Make the selected files of ``variant`` present in the mmaudio folders; the report of what is where."""
    kinds = selected_kinds(network, decoder, feature_models)
    folders = [Path(p) for p in model_folder.folder_paths_list()]
    planned, notes = plan_files(variant, layout, kinds, folders)
    missing = [p for p in planned if p.missing]
    if missing and hub_offline():
        raise MissingWeightsError(offline_message(missing))
    if missing:
        _check_disk_space(missing)
    fetched = dict(zip((id(p) for p in missing), fetch_missing(missing) if missing else [], strict=True))

    lines = [f"MMAudio {variant}, {layout}: {', '.join(ROLE_NAMES[k] for k in kinds)}"]
    for p in planned:
        if p.present is not None:
            lines.append(_line("found", p, p.present))
        elif p.conflict is not None:
            lines.append(_conflict_line(p))
        else:
            lines.append(_line("fetched", p, fetched[id(p)]) + f" from {p.entry.repo_id}")
    lines += notes
    if fetched:
        lines.append("Refresh the browser page (or press R) so the loaders list the new files.")
    licences = list(dict.fromkeys(p.entry.license for p in planned if p.entry.license))
    if licences:
        lines.append("Licences: " + "; ".join(licences))
    return "\n".join(lines)


def _ui_text(text: str) -> object:
    preview = getattr(ui, "PreviewText", None)
    return preview(text) if preview is not None else {"text": (text,)}


class MMAudioSyncDownloadWeights(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name=DISPLAY_NAME,
            category=CATEGORY,
            description=(
                "Fetches the published MMAudio weights of one variant from the Hugging Face Hub into "
                "ComfyUI/models/mmaudio (the first mmaudio model folder), only when you queue it, and only the files "
                "that are not there yet. Each file is checked against its published size and SHA-256 before it is "
                "put in place; Cancel stops the download and leaves no partial file. With HF_HUB_OFFLINE=1 "
                "nothing is downloaded and the error lists the files to get by hand. The MMAudio weights are "
                "licensed CC-BY-NC 4.0 (non-commercial)."
            ),
            inputs=[
                io.Combo.Input("variant", options=variants(), default=DEFAULT_VARIANT,
                               tooltip="Which MMAudio network: small_16k makes 16 kHz audio, the others 44.1 kHz. "
                                       "large_44k_v2 is the best; small ones need less memory."),
                io.Combo.Input("layout", options=list(LAYOUTS), default=DEFAULT_LAYOUT,
                               tooltip="Which published copies: the original .pth releases (hkchengrex/MMAudio, "
                                       "fp32), or Kijai's safetensors conversions in fp16 (half the download) or "
                                       "fp32. Kijai publishes only large_44k_v2 networks; other variants use the "
                                       "original network file."),
                io.Boolean.Input("network", default=True,
                                 tooltip="Fetch the flow network of the variant (for MMAudio Network Loader)."),
                io.Boolean.Input("decoder", default=True,
                                 tooltip="Fetch the VAE and BigVGAN vocoder of the variant's sample rate (for "
                                         "MMAudio Decoder Loader)."),
                io.Boolean.Input("feature_models", default=True,
                                 tooltip="Fetch CLIP (DFN5B ViT-H/14 384) and Synchformer, shared by every variant "
                                         "(for MMAudio Feature Models Loader)."),
            ],
            outputs=[io.String.Output(display_name="report",
                                      tooltip="Which files were found or fetched, with their sizes and folders "
                                              "(also shown on the node after it runs).")],
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, variant: str, layout: str, network: bool, decoder: bool,
                           feature_models: bool) -> object:
        """Rerun when the files change on disk (no network, only file sizes)."""
        try:
            folders = [Path(p) for p in model_folder.folder_paths_list()]
            planned, _ = plan_files(variant, layout, selected_kinds(network, decoder, feature_models), folders)
            return tuple((p.entry.id, str(p.present), str(p.conflict)) for p in planned), hub_offline()
        except Exception:
            return float("nan")  # never equal to itself: always run, and let execute report the problem

    @classmethod
    def execute(cls, variant: str, layout: str, network: bool = True, decoder: bool = True,
                feature_models: bool = True) -> io.NodeOutput:
        text = download_weights(variant, layout, network, decoder, feature_models)
        return io.NodeOutput(text, ui=_ui_text(text))


DOWNLOAD_NODES: list[type[io.ComfyNode]] = [MMAudioSyncDownloadWeights]
