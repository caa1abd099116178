"""Numba's on-disk cache, safe for several processes writing one directory.

Numba keeps, for each compiled function, an index file that maps each
signature and CPU to a data file holding the machine code. Its data files
are numbered: a process saving a new signature reads the index, takes the
first free number, writes the index, then the data. Two processes saving
different signatures of one function at the same time (two workers, or
nodes of two CPU kinds sharing ``NUMBA_CACHE_DIR`` on a shared file system)
take the same number, and the index can end up naming the other process's
data for a signature: a later process would load, and call, code compiled
for other argument types. Here a data file is named by a hash of what it
holds (signature, CPU, function bytecode), written before the index names
it, and the index is re-read and rewritten under a lock file, so that
concurrent saves neither mix nor lose entries. Every write stays Numba's
(a temporary file renamed into place, atomic on POSIX and NFS).

Where the file system has no locks (some NFS mounts), saves go on without
one: an entry can then be lost (that signature is compiled again later),
never mixed up.

Numba also judges a cached function fresh by its own source file alone,
yet the kernels inline code generated in other modules of this package (a
pass in ``block_kernels.py`` compiles in the search of ``fused_search.py``
and the row statistics of ``row_statistics.py``): after an edit to those
alone it would load machine code built from the old ones. So the index is
stamped with every kernel module's modification time and size
(:func:`kernel_sources_stamp`), and a change to any of them recompiles
every kernel.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from pathlib import Path

import numba
from numba.core.caching import FunctionCache, IndexDataCacheFile

try:
    import fcntl
except ImportError:  # Windows: no shared-file-system clusters to protect
    fcntl = None


@contextlib.contextmanager
def _locked(path: str):
    """Hold an exclusive lock on the file ``path`` (created if missing), where possible."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # no locks on this file system
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _SharedIndexDataCacheFile(IndexDataCacheFile):
    """Data files named by their key; the index updated under a lock."""

    def save(self, key, data) -> None:
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:24]
        data_name = self._data_name_pattern.replace("{number:d}", digest)
        self._save_data(data_name, data)
        with _locked(self._index_path + ".lock"):
            overloads = self._load_index()
            overloads[key] = data_name
            self._save_index(overloads)


@functools.cache
def kernel_sources_stamp() -> tuple[tuple[str, int, int], ...]:
    """Name, modification time (ns) and size of every module of :mod:`kmeans_dask._kernels`.

    Numba compares it with the stamp of a function's cache index; any
    difference makes the index stale.
    """
    stamps = []
    for source in sorted(Path(__file__).parent.glob("*.py")):
        status = os.stat(source)
        stamps.append((source.name, status.st_mtime_ns, status.st_size))
    return tuple(stamps)


class SharedFunctionCache(FunctionCache):
    """Numba's function cache with :class:`_SharedIndexDataCacheFile` files.

    Stamped with its own source and :func:`kernel_sources_stamp`.
    """

    def __init__(self, py_func) -> None:
        super().__init__(py_func)
        self._cache_file = _SharedIndexDataCacheFile(
            cache_path=self._cache_path,
            filename_base=self._impl.filename_base,
            source_stamp=(self._impl.locator.get_source_stamp(), kernel_sources_stamp()),
        )


def cached_njit(**options):
    """``numba.njit(cache=True, **options)`` with :class:`SharedFunctionCache`."""

    def decorate(function):
        dispatcher = numba.njit(**options)(function)
        # What Dispatcher.enable_caching does, with the shared-safe cache.
        dispatcher._cache = SharedFunctionCache(function)
        return dispatcher

    return decorate


def cache_path(dispatcher) -> str:
    """The directory where ``dispatcher`` (a :func:`cached_njit` kernel) caches its code."""
    return dispatcher._cache.cache_path
