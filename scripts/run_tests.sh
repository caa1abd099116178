#!/usr/bin/env bash
# Set up and run the whole test suite, as the README's Quickstart and CI do:
#   bash scripts/run_tests.sh [pytest arguments]
# Creates .venv with the package and its test extras, starts a single-node
# Slurm for the dask-jobqueue integration test where this user may (root;
# elsewhere that one test skips and says why), then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[test]"
if [ "$(id -u)" = 0 ]; then
    bash scripts/start_slurm.sh || echo "run_tests: Slurm could not be started; its test will skip"
else
    echo "run_tests: not root, Slurm not started; its test will skip (sudo bash scripts/start_slurm.sh)"
fi
exec .venv/bin/python -m pytest "$@"
