"""The frontend extension's logic, tested with Node's built-in test runner (js/tests/*.test.mjs)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_node_test_runner_passes_the_frontend_tests() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    tests = sorted(str(p) for p in (REPO / "js" / "tests").glob("*.test.mjs"))
    assert tests, "no frontend tests found in js/tests"
    result = subprocess.run([node, "--test", *tests], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout
