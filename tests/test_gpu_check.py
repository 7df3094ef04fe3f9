"""The prepared GPU check (bench/gpu_check.sh, bench/gpu_check.py) works end to end without a GPU.

Its dry run does everything a GPU run does on the CPU with tiny stand-ins: CUDA tests through pytest with a junit
XML (they skip here), every benchmark row, the JSON and markdown reports with a verdict on every target. The
pieces a dry run cannot reach here (missing packages, wheels, the verdict rules) are checked on their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VERDICTS = {"met", "missed", "not measured"}


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(REPO))
    from bench import gpu_check

    return gpu_check


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("gpu-check")
    no_wheels = tmp_path_factory.mktemp("no-wheels")
    env = {k: v for k, v in os.environ.items() if k not in ("MMAUDIO_REFERENCE_CODE", "MMAUDIO_GPU_WHEELS")}
    env["PYTHON"] = sys.executable
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), str(out), "--dry-run", "--wheels",
                           str(no_wheels)], cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
                          check=False)
    return out, done


def test_dry_run_writes_every_row_and_a_verdict_per_target(dry_run, gpu_check) -> None:
    out, done = dry_run
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["schema"] == "mmaudio-sync-gpu-check/1" and report["dry_run"] is True
    planned = [row.name for row in gpu_check.plan_rows(dry_run=True, reference=None)]
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == planned
    for name in ("bf16", "fp8", "staged_bf16", "staged_fp8", "low_vram_streamed", "batch8", "long_60s",
                 *(f"variant_{v}" for v in gpu_check.VARIANTS)):
        assert name in rows, name
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row["note"])
        summary = row["summary"]
        assert summary["end_to_end_s"] > 0 and summary["sampling_s"] > 0 and summary["peak_bytes"] > 0, name
    assert rows["variant_large_44k_v2"]["summary"] == rows["bf16"]["summary"]  # measured once
    assert rows["staged_bf16"]["summary"]["moves_s"] > 0 and rows["bf16"]["summary"]["moves_s"] is None
    assert rows["batch8"]["summary"]["batch"] == 8 and rows["batch8"]["summary"]["samples_per_second"] > 0
    assert rows["long_60s"]["summary"]["windows"] >= 2 and rows["long_60s"]["summary"]["features"] == "none"
    assert rows["fp8"]["summary"]["dtype"] == "fp8_e4m3fn"
    assert rows["bf16"]["benchmark"]["quality"]["rows"]  # the quality guard ran on the bf16 row

    targets = report["targets"]
    assert len(targets) == len(gpu_check.TARGETS)
    assert {t["verdict"] for t in targets} <= VERDICTS
    by_row = {(t["row"], t["unit"]): t for t in targets}
    assert by_row[("low_vram_streamed", "GB")]["verdict"] in ("met", "missed")
    assert rows["low_vram_streamed"]["benchmark"]["lowvram"] is True
    assert by_row[("bf16", "x")]["verdict"] == "not measured" and "reference" in by_row[("bf16", "x")]["detail"]
    for target in targets:
        if target["row"] in ("bf16", "staged_bf16", "fp8", "staged_fp8") and target["unit"] != "x":
            assert target["verdict"] in ("met", "missed") and target["value"] > 0, target

    tests = report["cuda_tests"]
    assert (out / "cuda_tests.xml").is_file()
    assert "tests/test_sampling.py::test_noise_is_the_same_on_cuda" in tests["node_ids"]
    assert any(i.startswith("tests/test_block_streaming.py::") for i in tests["node_ids"])
    assert tests["failures"] == tests["errors"] == 0 and tests["verdict"] in ("all skipped", "passed")

    table = (out / "gpu_check.md").read_text()
    assert "DRY RUN" in table and "## Targets" in table and "## CUDA tests" in table
    for name in planned:
        assert f"| {name} |" in table, name
    for target in targets:
        assert target["name"] in table
    assert (out / "gpu_check.log").is_file()


def test_cuda_tests_are_found_by_their_skip_decorators(tmp_path: Path, gpu_check) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_a.py").write_text(
        "import pytest, torch\n"
        "@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')\n"
        "def test_on_gpu():\n    pass\n"
        "def test_on_cpu():\n    torch.cuda.is_available()\n"
        "@pytest.mark.cuda\nclass TestGpu:\n    def test_x(self):\n        pass\n")
    (tests / "test_b.py").write_text(
        "import pytest, torch\npytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='cuda')\n"
        "def test_all():\n    pass\n")
    (tests / "test_c.py").write_text("def test_cpu():\n    assert 'cuda_graphs'\n")
    assert gpu_check.discover_cuda_tests(tests) == ["tests/test_a.py::test_on_gpu", "tests/test_a.py::TestGpu",
                                                    "tests/test_b.py"]


def test_verdicts_follow_the_rows(gpu_check) -> None:
    rows = gpu_check.plan_rows(dry_run=False, reference=None)
    by_name = {row.name: row for row in rows}
    by_name["bf16"].status = "ok"
    by_name["bf16"].summary = {"features": "all", "end_to_end_s": 0.45, "peak_bytes": 5.0e9,
                               "sampling_over_reference": 0.4}
    by_name["staged_bf16"].status = "ok"
    by_name["staged_bf16"].summary = {"features": "all", "end_to_end_s": 0.9, "peak_bytes": 2.6e9}
    by_name["fp8"].status = "degraded"  # ran on random features: the frames targets are not measured
    by_name["fp8"].summary = {"features": "random", "end_to_end_s": 0.2, "peak_bytes": 1e9}
    by_name["staged_fp8"].status = "error"
    by_name["staged_fp8"].note = "RuntimeError: boom"
    verdicts = {(t["row"], t["unit"]): t for t in gpu_check.judge(rows)}
    assert verdicts[("bf16", "s")]["verdict"] == "met"
    assert verdicts[("bf16", "GB")]["verdict"] == "missed"
    assert verdicts[("staged_bf16", "GB")]["verdict"] == "met"
    assert verdicts[("bf16", "x")]["verdict"] == "met"
    assert verdicts[("fp8", "GB")]["verdict"] == "not measured" and "random" in verdicts[("fp8", "GB")]["detail"]
    assert verdicts[("staged_fp8", "GB")]["verdict"] == "not measured" and "boom" in verdicts[("staged_fp8", "GB")][
        "detail"]
    assert verdicts[("low_vram_streamed", "GB")]["verdict"] == "not measured"
    # The context row of large_44k_v2 is the bf16 row; small_16k was not run.
    assert verdicts[("variant_small_16k", "s")]["verdict"] == "not measured"

    by_name["bf16"].summary["sampling_over_reference"] = None
    verdicts = {(t["row"], t["unit"]): t for t in gpu_check.judge(rows)}
    assert verdicts[("bf16", "x")]["verdict"] == "not measured" and "reference" in verdicts[("bf16", "x")]["detail"]


def test_missing_packages_skip_or_narrow_the_rows(gpu_check) -> None:
    rows = gpu_check.plan_rows(dry_run=False, reference=None)
    gpu_check.degrade(rows, {"av": None, "open_clip": "3.3.0", "ftfy": "6.3.1"})
    runnable = [row for row in rows if not row.same_as and row.status != "not wired yet"]
    assert all(row.status == "skipped" and "PyAV" in row.note for row in runnable)

    rows = gpu_check.plan_rows(dry_run=False, reference=None)
    gpu_check.degrade(rows, {"av": "18.1.0", "open_clip": None, "ftfy": None})
    for row in rows:
        if row.same_as or row.status == "not wired yet":
            continue
        assert row.status == "degraded" and "open_clip" in row.note
        argv = gpu_check.row_argv(row, dry_run=False, repeats=None)
        assert argv[argv.index("--features") + 1] == "random" and argv.count("--features") == 1
        assert argv[argv.index("--device") + 1] == "cuda"


def _wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel of a package ``name`` with ``VALUE = 42``."""
    path = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as archive:
        for file, text in files.items():
            archive.writestr(file, text)
    return path


def test_carried_wheels_are_installed_offline_and_reach_subprocesses(tmp_path: Path, gpu_check,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "mmaudio_gpu_check_probe")
    target = tmp_path / "site"
    report = gpu_check.install_wheels(wheels, target, log=lambda _m: None)
    assert report["installed"] is True and report["wheels"] == ["mmaudio_gpu_check_probe-1.0-py3-none-any.whl"]
    assert sys.path[0] == str(target) and os.environ["PYTHONPATH"].split(os.pathsep)[0] == str(target)
    done = subprocess.run([sys.executable, "-c", "import mmaudio_gpu_check_probe as p; print(p.VALUE)"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.stdout.strip() == "42", done.stderr

    empty = gpu_check.install_wheels(tmp_path / "nothing-here", tmp_path / "site2", log=lambda _m: None)
    assert empty["installed"] is False and "no wheels" in empty["note"]
    assert gpu_check.install_wheels(None, tmp_path / "site3")["installed"] is False
