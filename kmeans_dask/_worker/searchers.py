"""Searchers prepared once per set of centres in each worker process.

Preparing a searcher can cost far more than using it on one chunk: the
fused kernels pack the centres, an IVF search trains a coarse quantizer over
them. A worker runs the same iteration's chunk tasks one after another on
its threads, so it prepares the searcher for the first and hands the same
one to the others. Entries are found by the search spec and the centres
themselves (compared exactly, which costs one read of k x d values), so a
searcher is never reused for other centres, whoever asks.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from kmeans_dask.backends import Searcher, get_backend, search_capabilities

#: Prepared searchers kept per process: the current iteration's, and a few
#: recent ones (the final pass's, k-means||'s candidates, a second fit).
CACHED_SEARCHERS = 4


@dataclass(frozen=True)
class PreparedSearch:
    """A searcher over fixed centres, with what it can do besides ``nearest``."""

    searcher: Searcher
    fused_passes: bool
    """Whether it offers whole-chunk passes (``assign_and_accumulate``, ``bounded_pass``)."""
    runner_up: bool
    """Whether it offers ``nearest_two`` (a lower bound on the runner-up's distance)."""


@dataclass
class _Entry:
    spec: str
    centers: np.ndarray
    ready: threading.Event
    prepared: PreparedSearch | None = None
    error: BaseException | None = None


_lock = threading.Lock()
_entries: OrderedDict[int, _Entry] = OrderedDict()
_next_id = 0


def prepared_search(spec: str, centers: np.ndarray) -> PreparedSearch:
    """The searcher of ``spec`` over ``centers`` (in their dtype), prepared once per process.

    Threads asking for the same one at the same time wait for the first to
    prepare it. An error while preparing is raised to every one of them.
    """
    entry, owner = _claim(spec, centers)
    if owner:
        try:
            searcher = get_backend(spec).searcher(entry.centers)
            entry.prepared = PreparedSearch(
                searcher,
                fused_passes=searcher.fused_passes,
                runner_up=search_capabilities(spec).runner_up,
            )
        except BaseException as exc:
            entry.error = exc
            with _lock:
                _forget(entry)
            raise
        finally:
            entry.ready.set()
    entry.ready.wait()
    if entry.error is not None:
        raise entry.error
    assert entry.prepared is not None
    return entry.prepared


def _claim(spec: str, centers: np.ndarray) -> tuple[_Entry, bool]:
    """The entry for ``spec`` and ``centers``, and whether the caller must prepare it."""
    global _next_id
    with _lock:
        for key, entry in _entries.items():
            if entry.spec == spec and _same_centers(entry.centers, centers):
                _entries.move_to_end(key)
                return entry, False
        entry = _Entry(spec, centers.copy(), threading.Event())
        _entries[_next_id] = entry
        _next_id += 1
        while len(_entries) > CACHED_SEARCHERS:
            _entries.popitem(last=False)
        return entry, True


#: Rows of the centres compared first, spread over them: another iteration's
#: centres differ in some of these (the centres that moved), so the full
#: comparison (k x d values, 8 MiB at k = 16384, d = 128) runs about once
#: per lookup, on the entry that matches.
_QUICK_COMPARE_ROWS = 64


def _same_centers(kept: np.ndarray, centers: np.ndarray) -> bool:
    """Whether ``kept`` and ``centers`` hold the same values in the same dtype."""
    if kept.shape != centers.shape or kept.dtype != centers.dtype:
        return False
    step = max(1, len(centers) // _QUICK_COMPARE_ROWS)
    return np.array_equal(kept[::step], centers[::step]) and np.array_equal(kept, centers)


def _forget(entry: _Entry) -> None:
    for key, kept in list(_entries.items()):
        if kept is entry:
            del _entries[key]


def clear() -> None:
    """Forget every prepared searcher (tests; memory)."""
    with _lock:
        _entries.clear()
