"""Approximate nearest-centre search for large ``k``: IVF and HNSW over the centres.

With thousands of centres the exact assignment (every row scored against
every centre, :mod:`kmeans_dask.backends.numpy_blas`) dominates a Lloyd
iteration.
The searchers here index the *centres* (never the data), once per iteration,
and look only at the centres near each row:

* :class:`IVFSearcher` partitions the centres with a Faiss ``IndexIVFFlat``
  (an ``IndexFlatL2`` coarse quantizer over a k-means of the centres
  themselves, :mod:`kmeans_dask.backends.ivf_lists`) and
  returns, for each row, the nearest centre among the ``nprobe`` lists whose
  coarse centroids are nearest to the row. By default each list is scanned
  by the fused register kernels of :mod:`kmeans_dask._kernels.fused_search` over the
  rows that probe it, read in place, each row's best carried from list to
  list (``scan="fused"``); this gives the same answer as
  ``IndexIVFFlat.search``, faster; ``scan="faiss"`` calls Faiss's own scanner.
* :class:`HNSWSearcher` searches a Faiss ``IndexHNSWFlat`` graph over the
  centres.
* :class:`CandidateBackend` (``assign="candidates"``, what ``assign="auto"``
  takes at large ``k``): in a Lloyd iteration whose rows' labels of the
  previous iteration are still kept next to their chunk, each row scores only
  the few centres nearest to its previous centre (:func:`default_candidates`)
  (:mod:`kmeans_dask._kernels.candidate_search`; the neighbour table is made
  once per iteration by the client, :func:`candidate_table`). Below
  :data:`EXACT_FIRST_BELOW` centres (in :data:`EXACT_FIRST_MIN_FEATURES` or
  more dimensions) the first iteration searches exactly, so the second scans
  candidates already. Every other search of such a fit (the first iteration
  from that size on, a chunk whose labels were lost, streamed chunks, the
  farthest rows) is the IVF search above. From :data:`ROW_CANDIDATES_FROM`
  centres the rows keep their own candidates from the first IVF pass
  instead (:meth:`IVFSearcher.nearest_with_candidates`), with no table.

Rows for which a search finds no centre (every probed list empty, or a graph
search that returns ``-1``) are assigned by exact search, so every label is a
valid centre index. Both searchers are deterministic for given centres and
block: the HNSW graph is built with one OpenMP thread, and the IVF lists and
scans were found (and are tested) not to depend on the thread count.

On CPU, only the IVF searcher with the fused scan measured faster than the
exact search; Faiss's own IVF scan and HNSW were slower at every shape
benchmarked (k <= 16384, d in {64, 128}, one thread).

:func:`choose_assign_mode` says when approximation pays (``assign="auto"``);
the thresholds and defaults come from ``scripts/bench_approximate.py``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import faiss
import numpy as np

from kmeans_dask._kernels.block_kernels import (
    fold_smallest,
    rows_by_list,
    smallest_per_row,
)
from kmeans_dask._kernels.center_updates import squared_moves
from kmeans_dask._kernels.fused_search import fold_nearest, pack_centers
from kmeans_dask._kernels.native_threads import over_cores
from kmeans_dask.backends.ivf_lists import (
    DEFAULT_TRAIN_ITERATIONS,
    MAX_LIST_SIZE_RATIO,
    balanced_lists,
    coarse_centroids,
    list_means,
    squared_distances,
)
from kmeans_dask.backends.numpy_blas import ExactSearcher, exact_searcher

#: Smallest number of clusters for which ``assign="auto"`` picks the IVF
#: searcher: below it IVF was slower than exact search with one thread
#: (``scripts/bench_approximate.py``, RESULTS.md).
AUTO_IVF_MIN_CLUSTERS = 4096

#: Below this many features exact search is cheap (argmin-bound, not
#: GEMM-bound) and IVF hardly pays (RESULTS.md, "Design measurements").
AUTO_IVF_MIN_FEATURES = 8

#: Rows per call of :meth:`IVFSearcher.nearest` / :meth:`HNSWSearcher.nearest`.
_BLOCK_ROWS = 32768

#: Elements of the coarse score buffer (rows x lists) computed at once.
_COARSE_BUFFER_ELEMENTS = 1 << 20

#: From this many centres :func:`default_nlist` makes more than ``sqrt(k)``
#: lists, up to twice as many from twice as many centres.
MORE_LISTS_FROM = 8192

#: Lists probed per row when ``nprobe`` is not given (:func:`default_nprobe`),
#: and in a run's last Lloyd iteration.
DEFAULT_NPROBE = 8
CLOSING_NPROBE = 12

#: Fewest centres a row scores in a candidate iteration (the nearest to its
#: previous centre, that centre included), and the features x candidates a
#: row's scan is given at least (:func:`default_candidates`).
MIN_CANDIDATES = 16
CANDIDATE_SCAN_FEATURES = 1024

#: A centre that moved farther than this many times the distance to its
#: nearest other centre sends its rows to the IVF search in the next
#: candidate iteration (:func:`moved_too_far`). After the first Lloyd update
#: from random rows, centres move about twice that distance and 0.5-5% of
#: the rows' new nearest centres are not among their previous centre's 16
#: nearest; once they settle (moves of 0.1-0.3 times it), 99.9-100% are
#: (RESULTS.md, "Candidates from the previous centre").
CANDIDATE_MAX_MOVE = 0.5

#: Centres sampled by :meth:`CandidateBackend.settled`.
_SETTLED_SAMPLE = 256

#: Below this many centres a candidate fit's first Lloyd iteration searches
#: exactly (:meth:`CandidateBackend.first_exact`). Its exact labels let the
#: second iteration scan candidates already: IVF's labels from random-row
#: centres missed the nearest centre of 11.7% of the rows at k = 4096,
#: d = 128 (8 probes), and the candidates made from them 3.5%, so a second
#: IVF iteration was needed; from exact labels candidates missed 0.3%.
#: Through ``KMeans.fit`` at k = 4096 that saved 0.1-0.2 s of 1.35-1.42 and
#: took the inertia gap to exact Lloyd from +0.053% to +0.003%; at k = 8192
#: the exact pass cost more than the two IVF iterations it replaced
#: (RESULTS.md, "An exact first iteration"). In fewer dimensions it paid
#: nothing: at k = 4096, d = 64 the fits took as long (0.71-0.75 s against
#: 0.71-0.72 s), at d = 32 longer (0.88 s against 0.79-0.83 s).
EXACT_FIRST_BELOW = 8192
EXACT_FIRST_MIN_FEATURES = 128

#: From this many centres a candidate fit keeps each row's own candidates
#: (:meth:`CandidateBackend.row_candidates`): the first pass's IVF search
#: keeps each row's ``m`` nearest centres in the list nearest to it
#: (:meth:`IVFSearcher.nearest_with_candidates`), and the later passes search
#: each row among those, its last centre and the centres that emptied or
#: moved far, with no neighbour table (whose GEMM costs ``2 k^2 d``) and no
#: second IVF pass. At 100k x 128, k = 16384 (5 iterations) the fit took
#: 2.0-2.5 s instead of 2.4-3.0 s, its inertia 0.29% above exact Lloyd's
#: instead of 0.14% (RESULTS.md, "Per-row candidates").
ROW_CANDIDATES_FROM = 8192

#: Candidates per row in a pass right after an exact one, as a multiple of
#: :func:`default_candidates`: the centres moved far (as after the first
#: update from random rows), and 32 candidates held the new nearest centre
#: of 99.7% of the rows at k = 4096, d = 128, where 16 held 99.5%, a miss
#: rate at the limit of a chunk's check
#: (:data:`~kmeans_dask._worker.host_ops.CANDIDATE_MAX_MISSES`).
WIDE_CANDIDATES_FACTOR = 2

#: Fewest centres per thread when :func:`candidate_table` splits its work.
_TABLE_MIN_CENTERS_PER_THREAD = 512

#: HNSW build parameter (candidate list size while inserting).
DEFAULT_EF_CONSTRUCTION = 40


def default_nlist(n_clusters: int) -> int:
    """Number of IVF lists used when ``nlist`` is not given.

    ``round(sqrt(k))`` up to k = 8192, ``round(2 sqrt(k))`` from k = 16384,
    the factor growing with ``log2(k)`` between (clipped to ``[1, k]``). It
    balances the coarse step (``nlist`` distances per row) against the list
    scans (``nprobe * k / nlist`` distances per row) and the index's build
    (a k-means of ``nlist`` centroids over the ``k`` centres, in every
    iteration). Through ``KMeans.fit`` at 100k x 128 (RESULTS.md, "Twice
    as many IVF lists at k = 16384"), 256 lists at k = 16384 fitted in
    0.90-0.94 of the time of 128 and reached a lower inertia; at k = 8192, 128
    or 181 lists instead of 91, and at k = 4096, 128 instead of 64, were
    slower or no faster.

    Parameters
    ----------
    n_clusters : int
        Number of centres ``k``.

    Returns
    -------
    int
    """
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be positive, got {n_clusters}")
    factor = 1.0 + min(1.0, max(0.0, math.log2(n_clusters / MORE_LISTS_FROM)))
    return int(min(n_clusters, max(1, round(factor * math.sqrt(n_clusters)))))


def default_nprobe(nlist: int, *, closing: bool = False) -> int:
    """Number of IVF lists probed per row when ``nprobe`` is not given: ``min(nlist, 8)``.

    On the benchmark data (scripts/bench_approximate.py) the inertia lost to
    approximation depends mostly on ``nprobe`` itself, hardly on
    ``nprobe / nlist``: after 5 Lloyd iterations on overlapping blobs, 8
    probes cost 0.09-0.11% of inertia at k=4096, d=128 and 0.24% at
    k=16384, d=128 (0.23-0.52% at d=64), while 16 probes cost 0.01-0.14%
    at about half the speed-up. With ``nlist = sqrt(k)`` a row then scans
    about ``9 sqrt(k)`` centres instead of ``k`` (with ``2 sqrt(k)`` lists,
    from k = 16384, about ``6 sqrt(k)``).

    A run's last Lloyd iteration (``closing=True``) probes
    :data:`CLOSING_NPROBE` lists (at most ``nlist``): the final centres are
    the means of its assignment, so its misses weigh most on the final
    inertia. Through ``KMeans.fit`` at k = 4096 (``scripts/bench_assign_fit.py``,
    RESULTS.md) 12 probes there took the inertia gap to exact Lloyd from
    0.10% to 0.06% (16: 0.048%, 32: 0.026%, each costing more).

    Parameters
    ----------
    nlist : int
        Number of IVF lists.
    closing : bool, default=False
        For a run's last iteration.

    Returns
    -------
    int
    """
    if nlist < 1:
        raise ValueError(f"nlist must be positive, got {nlist}")
    return int(min(nlist, CLOSING_NPROBE if closing else DEFAULT_NPROBE))


def default_candidates(n_clusters: int, n_features: int) -> int:
    """Candidates per row when ``m`` is not given: ``max(16, 1024 // d)``, at most ``k``.

    At d = 128, 16 candidates held the new nearest centre of 99.5% of the
    rows after the first Lloyd update and 99.98-100% after the later ones
    (the benchmark's blobs, k = 4096). In few dimensions more centres crowd
    around a row's previous one: at d = 16, 16 candidates left the inertia
    1.4-2.1% above exact Lloyd's, 64 within 0.6% (as IVF) or below it
    (RESULTS.md, "Candidates from the previous centre"); a row's scan then
    costs the same ``m * d`` as 16 candidates at d = 64.

    Parameters
    ----------
    n_clusters : int
    n_features : int

    Returns
    -------
    int
    """
    return int(min(n_clusters, max(MIN_CANDIDATES, CANDIDATE_SCAN_FEATURES // n_features)))


def default_ef_search(n_clusters: int) -> int:
    """HNSW ``efSearch`` used when ``ef_search`` is not given: 64.

    Parameters
    ----------
    n_clusters : int
        Number of centres (kept for a future size-dependent rule).

    Returns
    -------
    int
    """
    del n_clusters
    return 64


def choose_assign_mode(n_clusters: int, n_features: int) -> str:
    """Assignment mode that ``assign="auto"`` stands for.

    Approximate (IVF, default ``nlist``/``nprobe``) search only where it
    measured faster than exact search: ``k >= AUTO_IVF_MIN_CLUSTERS`` and
    ``d >= AUTO_IVF_MIN_FEATURES``. The price there was a final inertia
    0.0-0.5% above exact Lloyd's after 5 iterations on the benchmark data.

    Parameters
    ----------
    n_clusters : int
        Number of centres ``k``.
    n_features : int
        Number of features ``d``.

    Returns
    -------
    {"exact", "candidates"}
        "candidates": IVF where a row has no previous label, its previous
        centre's neighbours where it has (:class:`CandidateBackend`).
    """
    if n_clusters < 1 or n_features < 1:
        raise ValueError(
            f"n_clusters and n_features must be positive, got {n_clusters} and {n_features}"
        )
    if n_clusters >= AUTO_IVF_MIN_CLUSTERS and n_features >= AUTO_IVF_MIN_FEATURES:
        return "candidates"
    return "exact"


@contextmanager
def _omp_threads(n_threads: int) -> Iterator[None]:
    """Run the block with ``n_threads`` OpenMP threads in Faiss, then restore."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n_threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _as_centers(centers: np.ndarray) -> np.ndarray:
    centers = np.asarray(centers)
    if centers.ndim != 2 or centers.shape[0] < 1 or centers.shape[1] < 1:
        raise ValueError(f"centers must be a non-empty 2-D array, got shape {centers.shape}")
    if centers.dtype not in (np.float32, np.float64):
        centers = centers.astype(np.float64)
    return np.ascontiguousarray(centers)


def _float32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


class _ExactFallback:
    """Exact search for the few rows an approximate search left unassigned."""

    def __init__(self, centers: np.ndarray) -> None:
        self._centers = centers
        self._searcher: ExactSearcher | None = None

    def fill(self, block: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Replace every negative label by the exact nearest centre."""
        missing = np.flatnonzero(labels < 0)
        if missing.size:
            if self._searcher is None:
                self._searcher = exact_searcher(self._centers)
            rows = np.ascontiguousarray(block[missing], dtype=self._centers.dtype)
            labels[missing] = self._searcher.nearest(rows)
        return labels


class IVFSearcher:
    """Nearest centre among the centres of the ``nprobe`` nearest IVF lists.

    Parameters
    ----------
    centers : ndarray of shape (k, d)
        Current centres, in the data's dtype (float32 or float64).
    nlist : int, optional
        Number of inverted lists (coarse centroids), between 1 and ``k``.
        Default :func:`default_nlist` (``sqrt(k)``, ``2 sqrt(k)`` from k = 16384).
    nprobe : int, optional
        Lists searched per row, between 1 and ``nlist``. Default
        :func:`default_nprobe` (``min(nlist, 8)``).
    scan : {"fused", "faiss"}, default="fused"
        How probed lists are searched. ``"fused"`` scores the rows that probe
        each list against its centres with the fused kernels, in the data's dtype;
        ``"faiss"`` calls ``IndexIVFFlat.search`` (float32). Both return the
        nearest centre among the probed lists (up to rounding and ties).
    train_iterations : int, default=DEFAULT_TRAIN_ITERATIONS
        Lloyd iterations of the k-means of the centres that makes the coarse
        centroids (:func:`~kmeans_dask.backends.ivf_lists.coarse_centroids`).
    seed : int, default=1234
        Seed of that k-means, for reproducible lists.

    Attributes
    ----------
    block_rows : int
        Rows per :meth:`nearest` call that keep scratch memory bounded.
    nlist, nprobe : int
        The values in use.
    index : faiss.IndexIVFFlat
        The index over the centres (float32).
    center_lists : ndarray of shape (k,), int64
        The list of each centre.

    Notes
    -----
    The coarse centroids are a k-means of the ``k`` centres themselves
    (:func:`~kmeans_dask.backends.ivf_lists.coarse_centroids`). A list
    takes more than :data:`~kmeans_dask.backends.ivf_lists.MAX_LIST_SIZE_RATIO`
    times the mean number of centres only from centres whose
    :data:`~kmeans_dask.backends.ivf_lists.LIST_CHOICES` nearest lists are
    all full (:func:`~kmeans_dask.backends.ivf_lists.balanced_lists`), and
    each coarse centroid is then moved to the mean of its list's centres;
    Faiss's index holds the same lists.
    """

    fused_passes = False

    def __init__(
        self,
        centers: np.ndarray,
        nlist: int | None = None,
        nprobe: int | None = None,
        *,
        scan: Literal["fused", "faiss"] = "fused",
        train_iterations: int = DEFAULT_TRAIN_ITERATIONS,
        seed: int = 1234,
    ) -> None:
        centers = _as_centers(centers)
        n_clusters, n_features = centers.shape
        nlist = default_nlist(n_clusters) if nlist is None else int(nlist)
        if not 1 <= nlist <= n_clusters:
            raise ValueError(
                f"nlist must be in [1, {n_clusters}] (the number of centres), got {nlist}"
            )
        nprobe = default_nprobe(nlist) if nprobe is None else int(nprobe)
        if not 1 <= nprobe <= nlist:
            raise ValueError(f"nprobe must be in [1, nlist={nlist}], got {nprobe}")
        if scan not in ("fused", "faiss"):
            raise ValueError(f"scan must be 'fused' or 'faiss', got {scan!r}")
        if train_iterations < 1:
            raise ValueError(f"train_iterations must be positive, got {train_iterations}")

        self.nlist = nlist
        self.nprobe = nprobe
        self.scan = scan
        self.block_rows = _BLOCK_ROWS
        self._dtype = centers.dtype
        self._centers = centers
        self._fallback = _ExactFallback(centers)
        self._scored_lists: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] | None = None

        centers32 = _float32(centers)
        trained = coarse_centroids(centers32, nlist, train_iterations, seed)
        lists = balanced_lists(centers32, trained, MAX_LIST_SIZE_RATIO)
        self.center_lists = lists
        quantizer = faiss.IndexFlatL2(n_features)
        quantizer.add(list_means(centers32, lists, trained))
        index = faiss.IndexIVFFlat(quantizer, n_features, nlist)  # trained: it holds nlist
        index.add_core(n_clusters, faiss.swig_ptr(centers32), None, faiss.swig_ptr(lists))
        index.nprobe = nprobe
        self.index = index
        self._quantizer = quantizer  # the index does not own it: keep it alive

        if scan == "fused":
            self._prepare_lists(centers)

    def _prepare_lists(self, centers: np.ndarray) -> None:
        """Pack the centres list by list for the fused scan."""
        dtype = centers.dtype
        coarse = self._quantizer.reconstruct_n(0, self.nlist).astype(np.float64)
        self._coarse_minus_two = np.ascontiguousarray(-2.0 * coarse, dtype=dtype)
        self._coarse_sq_norms = np.einsum("ij,ij->i", coarse, coarse).astype(dtype)
        invlists = self.index.invlists
        ids = []
        for list_no in range(self.nlist):
            size = invlists.list_size(list_no)
            ids.append(
                faiss.rev_swig_ptr(invlists.get_ids(list_no), size).astype(np.int32)
                if size
                else np.empty(0, dtype=np.int32)
            )
        self._list_bounds = np.concatenate([[0], np.cumsum([len(i) for i in ids])]).astype(
            np.int64
        )
        self._list_ids = np.concatenate(ids)
        ordered = centers[self._list_ids]
        self._list_packed = [
            (list_no, pack_centers(ordered[first:last]))
            for list_no, (first, last) in enumerate(itertools.pairwise(self._list_bounds))
            if last > first
        ]
        self._coarse_rows = max(1, _COARSE_BUFFER_ELEMENTS // self.nlist)

    def _probes(self, block: np.ndarray) -> np.ndarray:
        """(b, nprobe) indices of the lists nearest to each row (nearest first)."""
        n_rows = block.shape[0]
        if self.nprobe == self.nlist:
            return np.broadcast_to(np.arange(self.nlist), (n_rows, self.nlist))
        probes = np.empty((n_rows, self.nprobe), dtype=np.int64)
        for start in range(0, n_rows, self._coarse_rows):
            rows = block[start : start + self._coarse_rows]
            scores = rows @ self._coarse_minus_two.T
            scores += self._coarse_sq_norms
            smallest_per_row(scores, self.nprobe, probes[start : start + rows.shape[0]])
        return probes

    def _nearest_fused(self, block: np.ndarray, probes: np.ndarray | None = None) -> np.ndarray:
        block = np.ascontiguousarray(block, dtype=self._dtype)
        n_rows = block.shape[0]
        probes = self._probes(block) if probes is None else probes
        row_of, row_bounds = rows_by_list(probes, self.nlist)
        best_score = np.full(n_rows, np.inf, dtype=self._dtype)
        labels = np.full(n_rows, -1, dtype=np.int32)
        for list_no, packed in self._list_packed:
            rows = row_of[row_bounds[list_no] : row_bounds[list_no + 1]]
            if rows.size:
                fold_nearest(block, rows, *packed, self._list_bounds[list_no], labels, best_score)
        found = labels >= 0
        labels[found] = self._list_ids[labels[found]]
        return labels

    def _nearest_faiss(self, block: np.ndarray) -> np.ndarray:
        _, indices = self.index.search(_float32(block), 1)
        return indices[:, 0].astype(np.int32)

    def nearest(self, block: np.ndarray) -> np.ndarray:
        """Index of the (approximately) nearest centre for each row of ``block``.

        Parameters
        ----------
        block : ndarray of shape (b, d)

        Returns
        -------
        ndarray of shape (b,), int32
            Valid centre indices: rows that no probed list could answer are
            searched exactly.
        """
        if block.shape[0] == 0:
            return np.empty(0, dtype=np.int32)
        scan = self._nearest_fused if self.scan == "fused" else self._nearest_faiss
        return self._fallback.fill(block, scan(block))

    def nearest_with_candidates(self, block: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Each row's nearest centre (as :meth:`nearest`) and its ``m`` nearest centres
        in the list nearest to it.

        The candidates come from the row's first probe alone: the list's
        centres scored by GEMM (``-2 x . c + ||c||^2`` in the data's dtype),
        the ``m`` smallest kept
        (:func:`~kmeans_dask._kernels.block_kernels.fold_smallest`; ties to
        the lower index). On the benchmark's data (100k x 128, k = 16384)
        these held the rows' later centres as well as the ``m`` nearest over
        all ``nprobe`` lists (RESULTS.md, "Per-row candidates"), for an
        eighth of the scoring. ``scan="faiss"`` asks ``IndexIVFFlat.search``
        with one probe for them.

        Parameters
        ----------
        block : ndarray of shape (b, d)
        m : int
            Candidates per row, at least 1 (at most ``k`` are kept).

        Returns
        -------
        labels : ndarray of shape (b,), int32
            As :meth:`nearest`.
        candidates : ndarray of shape (b, min(m, k)), int32
            Nearest first; where the list holds fewer than ``m`` centres, the
            rest repeat the label.
        """
        m = min(int(m), len(self._centers))
        if m < 1:
            raise ValueError(f"m (candidates per row) must be at least 1, got {m}")
        block = np.ascontiguousarray(block, dtype=self._dtype)
        if block.shape[0] == 0:
            return np.empty(0, dtype=np.int32), np.empty((0, m), dtype=np.int32)
        if self.scan == "faiss":
            labels = self.nearest(block)
            _, found = self.index.search(
                _float32(block), m, params=faiss.SearchParametersIVF(nprobe=1)
            )
            found = found.astype(np.int32)
        else:
            probes = self._probes(block)
            labels = self._fallback.fill(block, self._nearest_fused(block, probes))
            scores = np.full((block.shape[0], m), np.inf, dtype=self._dtype)
            found = np.full((block.shape[0], m), -1, dtype=np.int32)
            row_of, row_bounds = rows_by_list(np.ascontiguousarray(probes[:, :1]), self.nlist)
            for list_no, ids, minus_two_t, sq_norms in self._lists_for_gemm():
                rows = row_of[row_bounds[list_no] : row_bounds[list_no + 1]]
                if rows.size:
                    list_scores = block[rows] @ minus_two_t
                    list_scores += sq_norms
                    fold_smallest(list_scores, rows, ids, scores, found)
        return labels, np.where(found < 0, labels[:, None], found)

    def _lists_for_gemm(self) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Per non-empty list: its number, centre ids, ``-2 C^T`` and ``||c||^2`` (made once)."""
        if self._scored_lists is None:
            lists = []
            for list_no, (first, last) in enumerate(itertools.pairwise(self._list_bounds)):
                if last > first:
                    ids = self._list_ids[first:last]
                    members = self._centers[ids]
                    minus_two_t = np.ascontiguousarray(-2.0 * members.T, dtype=self._dtype)
                    sq_norms = np.einsum("ij,ij->i", members, members).astype(self._dtype)
                    lists.append((list_no, ids, minus_two_t, sq_norms))
            self._scored_lists = lists
        return self._scored_lists


class HNSWSearcher:
    """Nearest centre by greedy search of an HNSW graph over the centres.

    Parameters
    ----------
    centers : ndarray of shape (k, d)
        Current centres, in the data's dtype (searched in float32).
    m : int, default=32
        Graph degree (``IndexHNSWFlat``'s ``M``).
    ef_search : int, optional
        Candidate list size of a search; larger is slower and more accurate.
        Default :func:`default_ef_search`.
    ef_construction : int, default=DEFAULT_EF_CONSTRUCTION
        Candidate list size while building the graph.

    Attributes
    ----------
    block_rows : int
    m, ef_search : int
    index : faiss.IndexHNSWFlat

    Notes
    -----
    The graph is built with a single OpenMP thread: a parallel build depends
    on thread timing, and the assignment must not. Greedy graph search can
    get stuck in one group of centres, and on CPU it was slower than exact
    search at every shape measured (RESULTS.md); prefer :class:`IVFSearcher`.
    """

    fused_passes = False

    def __init__(
        self,
        centers: np.ndarray,
        m: int = 32,
        ef_search: int | None = None,
        *,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    ) -> None:
        centers = _as_centers(centers)
        n_clusters, n_features = centers.shape
        ef_search = default_ef_search(n_clusters) if ef_search is None else int(ef_search)
        if m < 2:
            raise ValueError(f"m must be at least 2, got {m}")
        if ef_search < 1 or ef_construction < 1:
            raise ValueError("ef_search and ef_construction must be positive")
        self.m = int(m)
        self.ef_search = ef_search
        self.block_rows = _BLOCK_ROWS
        self._fallback = _ExactFallback(centers)
        index = faiss.IndexHNSWFlat(n_features, self.m)
        index.hnsw.efConstruction = int(ef_construction)
        with _omp_threads(1):
            index.add(_float32(centers))
        index.hnsw.efSearch = ef_search
        self.index = index

    def nearest(self, block: np.ndarray) -> np.ndarray:
        """Index of the (approximately) nearest centre for each row of ``block``.

        Parameters
        ----------
        block : ndarray of shape (b, d)

        Returns
        -------
        ndarray of shape (b,), int32
        """
        if block.shape[0] == 0:
            return np.empty(0, dtype=np.int32)
        _, indices = self.index.search(_float32(block), 1)
        return self._fallback.fill(block, indices[:, 0].astype(np.int32))


class IVFBackend:
    """Builds :class:`IVFSearcher` objects (registry name ``"ivf"``).

    Parameters
    ----------
    nlist, nprobe : int, optional
        Passed to every searcher; ``None`` picks the defaults from ``k``.
    scan : {"fused", "faiss"}, default="fused"
    """

    name = "ivf"

    def __init__(
        self,
        nlist: int | None = None,
        nprobe: int | None = None,
        scan: Literal["fused", "faiss"] = "fused",
    ) -> None:
        self.nlist = nlist
        self.nprobe = nprobe
        self.scan = scan

    def searcher(self, centers: np.ndarray) -> IVFSearcher:
        """Index ``centers`` (k, d), in the data's dtype."""
        return IVFSearcher(centers, self.nlist, self.nprobe, scan=self.scan)


class CandidateBackend:
    """Candidates from each row's previous centre (registry name ``"candidates"``).

    A Lloyd iteration that finds the labels of the run's previous iteration
    kept next to a chunk moves each of its rows to the nearest of the ``m``
    centres nearest to its previous centre (the client's
    :func:`candidate_table`, exact float64 distances for the candidates,
    :func:`~kmeans_dask._kernels.candidate_search.candidate_pass_rows`).
    Every other search made with this spec is an :class:`IVFSearcher`
    (``nlist``, ``nprobe``): :meth:`searcher` returns one, for the first
    iteration, chunks whose labels are not kept (streamed data, labels lost
    with a worker), the farthest rows of an empty cluster.

    Parameters
    ----------
    m : int, optional
        Candidates per row, at least 1 (at most ``k`` are used). Default
        :func:`default_candidates` (16 at d >= 64, more in fewer dimensions).
    nlist, nprobe : int, optional
        Of the IVF searches; ``None`` picks the defaults from ``k``.
    """

    name = "candidates"

    def __init__(
        self, m: int | None = None, nlist: int | None = None, nprobe: int | None = None
    ) -> None:
        if m is not None and int(m) < 1:
            raise ValueError(f"m (candidates per row) must be at least 1, got {m}")
        self.m = None if m is None else int(m)
        self.ivf = IVFBackend(nlist, nprobe)

    def searcher(self, centers: np.ndarray) -> IVFSearcher:
        """The IVF searcher over ``centers`` (k, d), for rows without previous labels."""
        return self.ivf.searcher(centers)

    def first_exact(self, n_clusters: int, n_features: int) -> bool:
        """Whether a fit's first iteration over kept labels searches exactly (below
        :data:`EXACT_FIRST_BELOW` centres, from :data:`EXACT_FIRST_MIN_FEATURES`
        features), so the next can scan candidates."""
        return n_clusters < EXACT_FIRST_BELOW and n_features >= EXACT_FIRST_MIN_FEATURES

    def row_candidates(self, n_clusters: int, n_features: int) -> bool:
        """Whether a fit keeps each row's own candidates from its first (IVF) pass
        (from :data:`ROW_CANDIDATES_FROM` centres) instead of scanning its
        previous centre's neighbours."""
        return n_clusters >= ROW_CANDIDATES_FROM and not self.first_exact(n_clusters, n_features)

    def candidates_per_row(self, n_clusters: int, n_features: int) -> int:
        """``m``, or :func:`default_candidates` when not given."""
        return default_candidates(n_clusters, n_features) if self.m is None else self.m

    def settled(self, centers: np.ndarray, previous: np.ndarray) -> bool:
        """Whether candidates pay in an iteration from ``previous`` to ``centers``.

        Not when more than half of a sample of :data:`_SETTLED_SAMPLE`
        centres (evenly spaced indices) moved too far
        (:data:`CANDIDATE_MAX_MOVE`) from ``previous``: their rows would go
        to IVF anyway, and the neighbour table would be made for nothing
        (as after the first update from random rows). The iteration is then
        searched with IVF alone.
        """
        if len(centers) < 2:
            return True
        sample = np.unique(np.linspace(0, len(centers) - 1, _SETTLED_SAMPLE).astype(np.int64))
        centers64 = centers.astype(np.float64)
        rows = centers64[sample]
        gaps = squared_distances(rows, centers64)
        gaps[np.arange(len(sample)), sample] = np.inf
        moved = rows - previous[sample].astype(np.float64)
        too_far = np.einsum("ij,ij->i", moved, moved) > CANDIDATE_MAX_MOVE**2 * gaps.min(axis=1)
        return bool(np.mean(too_far) <= 0.5)

    def neighbours(
        self,
        centers: np.ndarray,
        previous: np.ndarray | None = None,
        *,
        wide: bool = False,
        rows_dtype: np.dtype | None = None,
    ) -> np.ndarray:
        """(k, min(m, k)) int32: each centre's nearest centres, itself first.

        Exact (:func:`candidate_table`, scored in ``rows_dtype``, the rows'
        dtype, when given) without ``previous``, the table of the centres
        before their last move; else among the previous neighbours'
        previous neighbours (:func:`refined_table`; among the first ``m`` of
        a wider ``previous``). An exact table is ``wide`` (for a pass right
        after an exact one) with :data:`WIDE_CANDIDATES_FACTOR` times as many
        columns.
        """
        n_clusters, n_features = centers.shape
        m = default_candidates(n_clusters, n_features) if self.m is None else self.m
        if previous is None or previous.shape[0] != n_clusters or previous.shape[1] < m:
            return candidate_table(
                centers,
                min(m * (WIDE_CANDIDATES_FACTOR if wide else 1), n_clusters),
                rows_dtype,
            )
        return refined_table(centers, np.ascontiguousarray(previous[:, :m]))

    def table(
        self,
        centers: np.ndarray,
        previous: np.ndarray,
        neighbours: np.ndarray,
        *,
        after_exact: bool = False,
    ) -> np.ndarray:
        """The table a candidate iteration searches: ``neighbours`` (of ``centers``),
        with a row of -1 for each centre that moved too far from ``previous``
        (the centres the rows' labels refer to): its rows are searched with
        IVF (:func:`moved_too_far`). None is marked ``after_exact``, when the
        rows' labels are their nearest centres in ``previous``: each centre
        then moved to the mean of its own nearest rows, however far, and the
        centres near its new place are near them."""
        table = neighbours.copy()
        if not after_exact:
            table[moved_too_far(centers, previous, neighbours)] = -1
        return table


def moved_too_far(centers: np.ndarray, previous: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(k,) bool: the centres whose rows' previous centre says little about their new one.

    A centre that moved more than :data:`CANDIDATE_MAX_MOVE` times its
    distance to its nearest other centre (``table[:, 1]``; none with a
    single column).
    """
    if table.shape[1] < 2:
        return np.zeros(len(centers), dtype=bool)
    centers = np.ascontiguousarray(centers)
    moves = np.empty(len(centers))
    squared_moves(np.ascontiguousarray(previous), centers, moves)
    gaps = np.empty(len(centers))
    squared_moves(centers[table[:, 1]], centers, gaps)
    return moves > CANDIDATE_MAX_MOVE**2 * gaps


def candidate_table(centers: np.ndarray, m: int, dtype: np.dtype | None = None) -> np.ndarray:
    """(k, m) int32: each centre's ``m`` nearest centres, itself first.

    :func:`~kmeans_dask._kernels.candidate_search.neighbour_table`, whose
    GEMM costs ``2 k^2 d`` flops (about 0.6 s at k = 16384, d = 128 on two
    cores): made once per fit, then refined (:func:`refined_table`).
    Scored in the centres' dtype, or in ``dtype`` (the rows', float32 for
    float32 rows: 73-87 ms instead of 114-136 at k = 4096, d = 128, on two
    Ice Lake cores, the same centres in 99.98% of the rows; RESULTS.md,
    "Session 24"), the centres first taken about their mean, so the scores'
    rounding is that of the centres' spread rather than of their distance
    from the origin. The table only chooses which centres a row scores;
    the distances it is assigned by are exact.
    """
    from kmeans_dask._kernels.candidate_search import neighbour_table

    centers = _as_centers(centers)
    if dtype is not None and np.dtype(dtype) != centers.dtype:
        centers = np.ascontiguousarray(centers - centers.mean(axis=0), dtype=dtype)
    table = np.empty((len(centers), m), dtype=np.int32)
    _by_blocks(len(centers), lambda block: neighbour_table(centers, m, block, table[block]))
    return table


def refined_table(centers: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """(k, m) int32: each centre's ``m`` nearest among its ``previous`` neighbours' neighbours.

    :func:`~kmeans_dask._kernels.candidate_search.refined_neighbours`:
    about ``m^2`` exact distances per centre instead of ``k``.
    """
    from kmeans_dask._kernels.candidate_search import refined_neighbours

    centers64 = np.ascontiguousarray(centers, dtype=np.float64)
    table = np.empty(previous.shape, dtype=np.int32)
    _by_blocks(
        len(centers),
        lambda block: refined_neighbours(
            centers64, previous, block.start, block.stop, table[block]
        ),
    )
    return table


def _by_blocks(n_centers: int, work: Callable[[slice], None]) -> None:
    """``work`` over contiguous blocks of the centres, one block per core, in threads
    (:func:`~kmeans_dask._kernels.native_threads.over_cores`).

    Each with one BLAS thread: a centre's scores are computed alike whatever
    the number of cores, so the tables are too. The cap is the process's
    shared one (:func:`~kmeans_dask._kernels.native_threads.native_cap`):
    a fresh ``threadpool_limits`` looked for the loaded libraries again,
    6 ms per table on the client, and could overlap another thread's.
    """
    over_cores(work, n_centers, _TABLE_MIN_CENTERS_PER_THREAD)


class HNSWBackend:
    """Builds :class:`HNSWSearcher` objects (registry name ``"hnsw"``).

    Parameters
    ----------
    m : int, default=32
    ef_search : int, optional
    """

    name = "hnsw"

    def __init__(self, m: int = 32, ef_search: int | None = None) -> None:
        self.m = m
        self.ef_search = ef_search

    def searcher(self, centers: np.ndarray) -> HNSWSearcher:
        """Index ``centers`` (k, d), in the data's dtype."""
        return HNSWSearcher(centers, self.m, self.ef_search)
