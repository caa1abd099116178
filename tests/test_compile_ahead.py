"""Kernels compiled ahead of a fit, and Numba's cache shared by processes."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from distributed import Client, LocalCluster
from numba.core import types
from numba.core.caching import IndexDataCacheFile
from numba.core.registry import CPUDispatcher

import kmeans_dask
from kmeans_dask import KMeans
from kmeans_dask._fit.compile_ahead import KernelCompilation, compile_fit_kernels
from kmeans_dask._kernels import block_kernels, fused_search, rng
from kmeans_dask._kernels.shared_cache import _SharedIndexDataCacheFile
from kmeans_dask.cli import main
from kmeans_dask.datasets import make_blobs


def compiled_signatures() -> dict[str, set[str]]:
    """Every signature each kernel of :mod:`kmeans_dask._kernels` holds in this process."""
    return {
        f"{module.__name__}.{name}": {str(signature) for signature in kernel.signatures}
        for module in (block_kernels, fused_search, rng)
        for name, kernel in vars(module).items()
        if isinstance(kernel, CPUDispatcher)
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fit_after_compile_fit_kernels_compiles_nothing(dtype):
    compile_fit_kernels(dtype, 12, 5)
    before = compiled_signatures()
    X, _ = make_blobs(6000, 5, 12, chunk_rows=2000, cluster_std=4.0, dtype=dtype, random_state=3)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster),
    ):
        for data in (X, X.compute()):  # Dask blocks, and NumPy rows scattered
            model = KMeans(12, random_state=0, max_iter=30, tol=0.0).fit(data)
            assert model.n_iter_ > 5  # long enough for the bounded passes
    after = compiled_signatures()
    assert {
        name: after[name] - before[name] for name in after if after[name] != before[name]
    } == {}


def test_both_uses_of_the_bounded_pass_share_one_signature():
    compile_fit_kernels(np.float32, 12, 5, stages=("iterations",))
    # Seeding bounds ("no movement") and moving them: a movement tuple both times.
    movements = [signature[13] for signature in block_kernels.bounded_pass_rows.signatures]
    assert movements and all(isinstance(m, types.Tuple) for m in movements)


def test_largest_above_the_buffer_compiles_no_sort():
    values = np.random.default_rng(0).random(1000)
    out = np.empty(block_kernels.LARGEST_BUFFER_MAX + 1, dtype=np.int64)
    block_kernels.largest(values, out.size, out)
    np.testing.assert_array_equal(out, np.argsort(-values, kind="stable")[: out.size])
    assert not isinstance(block_kernels.largest, CPUDispatcher)


@pytest.mark.parametrize(
    "args, options, match",
    [
        ((np.float32, 4, 3), {"stages": ("warmup",)}, r"stages must be among .*got \['warmup'\]"),
        ((np.int8, 4, 3), {}, "dtype must be float32 or float64, got int8"),
        ((np.float32, 0, 3), {}, "n_clusters=0 and n_features=3 should both be >= 1"),
    ],
)
def test_bad_arguments_are_refused(args, options, match):
    with pytest.raises(ValueError, match=match):
        compile_fit_kernels(*args, **options)


def test_compile_command_fills_the_cache_directory(tmp_path, capsys):
    cache = tmp_path / "cache"
    script = textwrap.dedent(
        """
        from kmeans_dask.cli import main
        raise SystemExit(main(["compile", "--dtype", "float32", "-k", "8", "-d", "4",
                               "--processes", "2"]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "NUMBA_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"cached under {cache}" in done.stdout
    indexes = {p.name.split("-")[0] for p in cache.rglob("*.nbi")}
    assert {"block_kernels.bounded_pass_rows", "block_kernels.column_moments"} <= indexes
    # A second run loads every kernel from there: nothing new is written.
    files = sorted(p.name for p in cache.rglob("*.nbc"))
    subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "NUMBA_CACHE_DIR": str(cache)},
        capture_output=True,
        check=True,
    )
    assert sorted(p.name for p in cache.rglob("*.nbc")) == files


def test_demo_compiles_while_its_cluster_starts():
    demo = "from kmeans_dask.cli import main; raise SystemExit(main())"
    args = ["demo", "--n-samples", "4000", "--n-features", "4", "-k", "8"]
    done = subprocess.run(
        [sys.executable, "-c", demo, *args], capture_output=True, text=True, check=True
    )
    assert "kernels compiled or loaded, while the cluster started" in done.stdout
    assert "of which waited for after the cluster started" in done.stdout


def test_compile_command_in_this_process(capsys):
    assert main(["compile", "--dtype", "float64", "-k", "3", "-d", "2", "--processes", "1"]) == 0
    assert "compiled the kernels of fits of k=3 on float64 rows" in capsys.readouterr().out


def test_kernel_compilation_raises_a_process_error():
    compilation = KernelCompilation(["float32"], 0, 3, processes=2)
    with pytest.raises(ValueError, match="n_clusters=0"):
        compilation.wait()


# --- one cache directory, several processes ----------------------------------------------


def _save_many(cache_class, directory: str, writer: int, start, count: int) -> None:
    cache_file = cache_class(directory, "kernel-1.py311", ("stamp", 1))
    start.wait()
    for i in range(count):
        cache_file.save((f"signature-{writer}-{i}", "cpu"), pickle.dumps((writer, i)))


def _saved_by_two_processes_at_once(cache_class, directory) -> IndexDataCacheFile:
    context = multiprocessing.get_context("fork")
    start = context.Event()
    writers = [
        context.Process(target=_save_many, args=(cache_class, str(directory), w, start, 40))
        for w in range(2)
    ]
    for writer in writers:
        writer.start()
    start.set()
    for writer in writers:
        writer.join()
        assert writer.exitcode == 0
    return cache_class(str(directory), "kernel-1.py311", ("stamp", 1))


@pytest.mark.skipif(sys.platform != "linux", reason="forks two writers at once")
def test_two_processes_saving_at_once_keep_every_entry_with_its_own_data(tmp_path):
    cache_file = _saved_by_two_processes_at_once(_SharedIndexDataCacheFile, tmp_path)
    for writer in range(2):
        for i in range(40):
            data = cache_file.load((f"signature-{writer}-{i}", "cpu"))
            assert data is not None and pickle.loads(data) == (writer, i)


_KERNEL_CALL = """
import sys
import numpy as np
from kmeans_dask._kernels.block_kernels import column_moments
dtype = np.dtype(sys.argv[1])
data = np.arange(12, dtype=dtype).reshape(4, 3)
mean, m2 = np.empty(3), np.empty(3)
column_moments(data, mean, m2)
assert np.allclose(mean, data.mean(0)) and np.allclose(m2, 4 * data.var(0)), (mean, m2)
stats = column_moments.stats
print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
"""


def test_processes_compiling_into_one_cache_directory_at_once(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    run = [sys.executable, "-c", _KERNEL_CALL]
    # Two signatures of one kernel compiled and saved by two processes at once.
    compiling = [
        subprocess.Popen([*run, dtype], env=env, stdout=subprocess.PIPE, text=True)
        for dtype in ("float32", "float64")
    ]
    assert [p.communicate()[0].split() for p in compiling] == [["0", "1"], ["0", "1"]]
    # Then each process finds its signature in the cache, and the right code.
    for dtype in ("float32", "float64"):
        loaded = subprocess.run([*run, dtype], env=env, capture_output=True, text=True, check=True)
        assert loaded.stdout.split() == ["1", "0"]


_INLINING_KERNEL_CALL = """
import sys
import numpy as np
import kmeans_dask
from kmeans_dask._kernels.block_kernels import squared_distances
assert kmeans_dask.__file__.startswith(sys.argv[1]), kmeans_dask.__file__
rows = np.arange(12, dtype=np.float32).reshape(4, 3)
out = np.empty(4)
squared_distances(rows, np.zeros(4, dtype=np.int32), np.zeros((1, 3)), out)
assert (out == (rows.astype(np.float64) ** 2).sum(1)).all(), out
stats = squared_distances.stats
print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
"""


def test_an_edit_to_a_module_the_kernels_inline_recompiles_them(tmp_path):
    """``squared_distances`` (block_kernels.py) inlines row_statistics.py's code.

    Numba alone would judge its cache by block_kernels.py and load the code
    built from the old row_statistics.py.
    """
    source = tmp_path / "src"
    shutil.copytree(
        Path(kmeans_dask.__file__).parent,
        source / "kmeans_dask",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(source)}

    def cache_hits_and_misses() -> list[str]:
        run = [sys.executable, "-c", _INLINING_KERNEL_CALL, str(source)]
        called = subprocess.run(run, env=env, cwd=tmp_path, capture_output=True, text=True)
        assert called.returncode == 0, called.stderr
        return called.stdout.split()

    assert cache_hits_and_misses() == ["0", "1"]
    assert cache_hits_and_misses() == ["1", "0"]
    with open(source / "kmeans_dask" / "_kernels" / "row_statistics.py", "a") as module:
        module.write("\n# edited\n")
    assert cache_hits_and_misses() == ["0", "1"]
