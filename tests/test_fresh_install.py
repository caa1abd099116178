"""A fresh venv with the base install only (``pip install -e .``) runs every README command.

Opt-in (``pytest -m install``): it installs the package and its dependencies
into a new venv (about a minute with pip's cache) and runs the commands of the
README's Quickstart and Command line sections, scaled down, plus the Python
API snippet as a script. What the base install covers must work; what needs
an extra (dask-jobqueue for Slurm, matplotlib for ``--png``, pyspark) must fail
in one line that names the extra.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

pytestmark = pytest.mark.install

#: Sizes that keep each command short: (README text, replacement).
SCALED = [
    ("-n 10000000", "-n 100000"),
    ("-k 4096", "-k 256"),
    ("--n-samples 1000000", "--n-samples 20000 --iterations 2 --repeats 1"),
]
#: Commands that need an extra, and the extra their one-line error must name.
NEEDS_EXTRA = {"--cluster cluster_specs/slurm.yaml": "[hpc]", "--png": "[plot]"}


def readme_commands() -> list[str]:
    """The ``kmeans-dask`` lines of the README's bash blocks (comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    commands = []
    for line in lines:
        if line.startswith("kmeans-dask "):
            commands.append(line)
        elif "&& .venv/bin/kmeans-dask " in line:
            commands.append(line.split("&& .venv/bin/")[-1])
    return commands


def readme_python_snippet() -> str:
    """The README's Python API snippet, scaled down."""
    snippet = re.search(r"## Python API\n\n```python\n(.*?)```", README, flags=re.S).group(1)
    snippet = snippet.replace("10_000_000", "100_000").replace("n_clusters=256", "n_clusters=16")
    fitted = "KMeans(4, random_state=0).fit(X[:2000])"
    return snippet + f"    print({fitted}.history_.to_pandas().shape[0] > 0)\n"


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("fresh") / "venv"
    venv.create(where, with_pip=True)
    subprocess.run(
        [str(where / "bin" / "pip"), "install", "-q", "-e", str(ROOT)],
        check=True,
        timeout=900,
    )
    return where


def test_the_base_install_lacks_the_extras(base_venv):
    code = (
        "import importlib.util as u; print([m for m in "
        + repr(["dask_jobqueue", "matplotlib", "palmerpenguins", "pyspark", "pytest"])
        + " if u.find_spec(m)])"
    )
    done = subprocess.run(
        [str(base_venv / "bin" / "python"), "-c", code], capture_output=True, text=True
    )
    assert done.stdout.strip() == "[]", "the fresh venv is not a base install"


def test_every_readme_command_runs_on_the_base_install(base_venv, tmp_path):
    commands = readme_commands()
    assert commands[0] == "kmeans-dask demo" and len(commands) >= 12
    (tmp_path / "cluster_specs").symlink_to(ROOT / "cluster_specs")
    shutil.copy(ROOT / "tests" / "data" / "model-0.1.0.npz", tmp_path / "old.npz")  # convert's
    for line in commands:
        if "$PENGUINS" in line:
            continue  # the penguins table needs the examples extra: tests/test_segment.py runs it
        for text, scaled in SCALED:
            line = line.replace(text, scaled)
        argv = shlex.split(line)
        argv[0] = str(base_venv / "bin" / "kmeans-dask")
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert "Traceback" not in done.stderr, (line, done.stderr)
        extra = next((e for key, e in NEEDS_EXTRA.items() if key in line), None)
        if "--with-spark" in line:
            extra = "[spark]"
        if extra is None:
            assert done.returncode == 0, (line, done.stdout, done.stderr)
        elif done.returncode != 0:  # needs an extra: one line naming it
            assert f"kmeans_dask{extra}" in done.stderr, (line, done.stderr)


def test_the_readme_python_snippet_runs_as_a_script(base_venv, tmp_path):
    script = tmp_path / "snippet.py"
    script.write_text(readme_python_snippet())
    done = subprocess.run(
        [str(base_venv / "bin" / "python"), str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("True")
    assert (tmp_path / "model.safetensors").is_file()
