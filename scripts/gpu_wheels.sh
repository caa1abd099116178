#!/usr/bin/env bash
# Download what scripts/gpu_check.sh installs on a GPU machine without network:
# wheels for Python 3.12 on x86-64 Linux of the packages the machine lacks
# (its image has CuPy, numba-cuda, NumPy 2, scikit-learn, SciPy, pandas, rich).
#   bash scripts/gpu_wheels.sh [folder]     # default .gpu-wheels (git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
folder=${1:-.gpu-wheels}
mkdir -p "$folder"
.venv/bin/python -m pip download -q --dest "$folder" --only-binary=:all: \
    --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --implementation cp --no-deps \
    "dask==$(.venv/bin/python -c 'import dask; print(dask.__version__)')" \
    "distributed==$(.venv/bin/python -c 'import distributed; print(distributed.__version__)')" \
    partd locket tblib zict tornado array-api-compat importlib-metadata
du -sh "$folder"
