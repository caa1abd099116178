"""The code base stays ruff-clean (lint and format)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    candidate = Path(sys.executable).with_name("ruff")
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: install the package with the [test] extra")
    return [found]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(command):
    result = subprocess.run(
        [*_ruff(), *command, "kmeans_dask", "tests", "scripts"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
