#!/usr/bin/env bash
# The GPU check, in one command, on a machine with an NVIDIA GPU and no network:
#   bash scripts/gpu_check.sh [wheel folder]    # default .gpu-wheels
# Installs the carried wheels (scripts/gpu_wheels.sh makes them), prints the
# versions and the GPU, runs the GPU tests (pytest -m gpu, and the simulator
# and PTX tests of the GPU path), then the GPU benchmark. Results go to
# $OUT when it is set (the device tool's output folder), else to ./gpu-check.
set -uo pipefail
cd "$(dirname "$0")/.."
wheels=${1:-.gpu-wheels}
out=${OUT:-gpu-check}
mkdir -p "$out"
python3 -m pip install -q --no-index --find-links "$wheels" --no-deps "$wheels"/*.whl
export PYTHONPATH=$PWD
{
    nvidia-smi -L
    python3 -c 'import sys, numpy, cupy, numba, dask, distributed, sklearn
print("python", sys.version.split()[0])
for m in (numpy, cupy, numba, dask, distributed, sklearn):
    print(m.__name__, m.__version__)
print("gpu", cupy.cuda.runtime.getDeviceProperties(0)["name"].decode())'
} 2>&1 | tee "$out/versions.txt"
status=0
timeout 240 python3 -m pytest -q -p no:cacheprovider -o addopts="" -m gpu \
    tests/test_gpu.py 2>&1 | tail -30 | tee "$out/tests.txt" || status=1
timeout 120 python3 -m pytest -q -p no:cacheprovider -o addopts="" \
    tests/test_gpu_path.py 2>&1 | tail -10 | tee -a "$out/tests.txt" || status=1
timeout 300 python3 scripts/bench_gpu.py 2>&1 | tail -12 | tee "$out/bench.txt" || status=1
exit $status
