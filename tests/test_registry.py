"""What users and the Comfy Registry are told agrees with the code: pyproject.toml's registry fields, the publish
workflow, and the README's install lines, file sizes and CLIP naming.

The registry reads ``[project]`` and ``[tool.comfy]`` (https://docs.comfy.org/registry/specifications) and
``.github/workflows/publish.yml`` runs its action; the README's sizes and folder names come from the download
catalogue (``mmaudio/weights/known_files.py``), so a figure that drifts from it shows here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mmaudio.weights.known_files import KNOWN_FILES, KnownFile, files_for_variant, known_file

tomllib = pytest.importorskip("tomllib")
yaml = pytest.importorskip("yaml")

REPO_ROOT = Path(__file__).resolve().parents[1]
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
PUBLISH = REPO_ROOT / ".github" / "workflows" / "publish.yml"


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def publish() -> dict[str, Any]:
    return yaml.safe_load(PUBLISH.read_text(encoding="utf-8"))


def _gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB"


# --- pyproject.toml -----------------------------------------------------------------------------------------------


def test_registry_fields(pyproject) -> None:
    project, comfy = pyproject["project"], pyproject["tool"]["comfy"]
    # the registry's rules for a node id: < 100 characters, letters, digits, - _ . without two in a row
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*", project["name"]) and len(project["name"]) < 100
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), "X.Y.Z, as the registry requires"
    assert project["license"] == {"file": "LICENSE"} and (REPO_ROOT / "LICENSE").is_file()
    assert project["description"]
    assert project["urls"]["Repository"].startswith("https://github.com/")
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert isinstance(comfy["Icon"], str)
    for path in comfy.get("includes", []):
        assert (REPO_ROOT / path).exists(), f"includes names {path}, which is not there"


def test_dependencies_match_requirements(pyproject) -> None:
    """The registry installs [project] dependencies, ComfyUI-Manager and pip requirements.txt: the same list."""
    lines = (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    requirements = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert pyproject["project"]["dependencies"] == requirements
    assert not any(re.match(r"torch(vision|audio)?\b", dep) for dep in requirements), "ComfyUI provides torch"


# --- the publish workflow -----------------------------------------------------------------------------------------


def test_publish_workflow_runs_the_registry_action(publish, pyproject) -> None:
    triggers = publish.get("on", publish.get(True))  # YAML 1.1 reads a bare "on" key as True
    assert "workflow_dispatch" in triggers
    assert triggers["push"]["branches"] == ["main"] and triggers["push"]["paths"] == ["pyproject.toml"]
    (job,) = publish["jobs"].values()
    steps = {step["uses"].split("@")[0]: step for step in job["steps"] if "uses" in step}
    action = steps["Comfy-Org/publish-node-action"]
    assert action["with"] == {"personal_access_token": "${{ secrets.REGISTRY_ACCESS_TOKEN }}"}
    assert "actions/checkout" in steps
    owner = pyproject["project"]["urls"]["Repository"].removeprefix("https://github.com/").split("/")[0]
    assert f"github.repository_owner == '{owner}'" in job["if"], "only the repository named in pyproject publishes"


# --- the README ---------------------------------------------------------------------------------------------------


def test_readme_install_lines_name_the_registry_entry(pyproject) -> None:
    name, display = pyproject["project"]["name"], pyproject["tool"]["comfy"]["DisplayName"]
    assert "### Install with ComfyUI-Manager" in README
    assert f"comfy node install {name}" in README
    assert f"search for **{display}**" in README
    assert f"git clone <this repository> {name}" in README


def test_readme_file_sizes_are_the_published_ones() -> None:
    """Every "`file` N.NN GB" in the README is a catalogue file with that size, and every weights file is given."""
    stated = dict(re.findall(r"`([^`]+)` (\d+\.\d\d GB)", README))
    for name, size in stated.items():
        entry = known_file(name)
        assert _gb(entry.expected_bytes) == size, (name, size)
    weights = {f.name for f in KNOWN_FILES if f.kind != "config"}
    assert weights <= set(stated), f"no size given for {sorted(weights - set(stated))}"


def _download_bytes(files: dict[str, KnownFile]) -> int:
    companions = [known_file(c) for f in files.values() for c in f.companions]
    return sum(f.expected_bytes or 0 for f in [*files.values(), *companions])


@pytest.mark.parametrize(
    ("variant", "prefer", "what"),
    [("large_44k_v2", "original", "the default `large_44k_v2` weights as originally published"),
     ("large_44k_v2", "fp16", "with Kijai's fp16 files"),
     ("small_16k", "original", "for `small_16k`")],
)
def test_readme_download_totals(variant: str, prefer: str, what: str) -> None:
    total = f"{_download_bytes(files_for_variant(variant, prefer=prefer)) / 1e9:.1f} GB"
    flat = " ".join(README.split())
    assert f"{total} {what}" in flat or f"{total} for {what}" in flat, (total, what)


def test_one_clip_name_everywhere() -> None:
    """The Hub repository and the original layout's folder are one name, the catalogue's; "-384" appears only in
    Kijai's file names and as the former name the reference uses."""
    entry = known_file("open_clip_pytorch_model.bin")
    assert entry.repo_id == "apple/DFN5B-CLIP-ViT-H-14-378"
    assert entry.local_path == f"{entry.repo_id}/open_clip_pytorch_model.bin"
    assert entry.local_path in README
    shipped = [README, *(p.read_text(encoding="utf-8") for p in (REPO_ROOT / "workflows").glob("*.json"))]
    for text in shipped:
        assert set(re.findall(r"apple/DFN5B-CLIP-ViT-H-14-(\d+)", text)) <= {"378"}
    kijai = {f.name for f in KNOWN_FILES if f.kind == "clip" and f.source == "kijai"}
    for match in re.finditer(r"[\w/.-]*DFN5B-CLIP-ViT-H-14-384[\w.-]*", README):
        assert match.group() in kijai or match.group() == "DFN5B-CLIP-ViT-H-14-384", match.group()
