#!/usr/bin/env bash
# Set up and run the whole test suite, as the README's Quickstart and CI do:
#   bash scripts/run_tests.sh [pytest arguments]
# Creates .venv with the package and its test extras, starts a single-node
# Slurm for the dask-jobqueue integration test where this user may (root;
# elsewhere that one test skips and says why), then runs pytest.
#
# Then the other end of the allowed dask/distributed range: .venv-oldest gets
# the package with the oldest dask and distributed that pyproject.toml allows
# (everything else as resolved today; built while the main tests run) and runs
# the tests of the engine and the actors, whose calls use distributed's actor
# handler. KMEANS_DASK_OLDEST=0 skips that step. The exit status is non-zero
# if either run fails.
#
# The main run spreads the test files over KMEANS_DASK_TEST_PROCESSES pytest
# processes (pytest-xdist, default 2): most tests wait on worker processes,
# sockets and subprocesses, so two cores run two files at once (7 minutes
# instead of 11 on the 2-core CI machine). Each file stays in one process,
# with its module fixtures; 1 runs them all in this process.
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
status=0
oldest_build=""
if [ "${KMEANS_DASK_OLDEST:-1}" != 0 ]; then
    # The lower bound as pyproject.toml writes it: "dask[array,distributed]>=X.Y.Z".
    oldest=$(sed -n 's/^ *"dask\[array,distributed\]>=\([0-9.]*\)".*/\1/p' pyproject.toml)
    if [ -z "$oldest" ]; then
        echo "run_tests: no dask[array,distributed]>=X.Y.Z bound found in pyproject.toml" >&2
        exit 1
    fi
    # .venv-oldest is built while the main tests run: pip mostly waits on the
    # network and the disk, and the tests leave a core idle often enough.
    oldest_log=$(mktemp)
    (
        python3 -m venv .venv-oldest
        .venv-oldest/bin/pip install -q --upgrade pip
        .venv-oldest/bin/pip install -q -e . "dask[array,distributed]==$oldest" \
            "distributed==$oldest" "pytest>=8" "hypothesis>=6"
    ) >"$oldest_log" 2>&1 &
    oldest_build=$!
fi
processes=${KMEANS_DASK_TEST_PROCESSES:-2}
spread=()
if [ "$processes" != 1 ]; then
    spread=(-n "$processes" --dist loadfile)
fi
.venv/bin/python -m pytest ${spread[@]+"${spread[@]}"} --durations=20 "$@" || status=$?

if [ -n "$oldest_build" ]; then
    echo "run_tests: the engine and actor tests on dask and distributed $oldest (.venv-oldest)"
    started=$SECONDS
    if wait "$oldest_build"; then
        .venv-oldest/bin/python -m pytest -p no:cacheprovider -q \
            tests/test_hosts.py tests/test_agreement.py tests/test_worker_loss.py -k "not tasks" \
            || status=$?
    else
        cat "$oldest_log" >&2
        echo "run_tests: building .venv-oldest failed" >&2
        status=1
    fi
    rm -f "$oldest_log"
    echo "run_tests: oldest dask/distributed step took $((SECONDS - started)) s after the main tests"
fi
exit $status
