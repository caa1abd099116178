"""Mini-batch k-means on a stream of batches: the pure update behind ``partial_fit``.

Nothing here knows about Dask: one batch is an array that fits in memory
(NumPy, or CuPy worked on in its GPU: :mod:`.batch_rows`), and each call
returns a *new* :class:`StreamState`. The input state
is never modified, and the random generator is only consumed once the batch
has been validated, so a batch that is rejected leaves the model as it was.

The update rule
---------------
This is the mini-batch k-means of Sculley [1]_ with a per-centre learning
rate ``1 / count``, in the weighted form of scikit-learn's
``MiniBatchKMeans`` (``_mini_batch_step`` in ``sklearn/cluster/_kmeans.py``
[2]_), extended with the forgetting factor of Spark's ``StreamingKMeans``
[3]_. For a batch of rows ``x_i`` with weights ``w_i``:

1. Every row is assigned to its nearest current centre, giving per-cluster
   weighted sums ``s_j = sum_{i in j} w_i x_i`` and weights
   ``m_j = sum_{i in j} w_i`` (:func:`kmeans_dask._worker.host_ops.statistics_and_labels`).
   The batch inertia is ``sum_i w_i ||x_i - c_{label(i)}||^2`` with the centres
   *before* the update.
2. Old counts are discounted by ``decay`` (``0 < decay <= 1``) and the new
   weight is added::

       n_j' = decay * n_j + m_j
       c_j' = (decay * n_j * c_j + s_j) / n_j'      if m_j > 0
       c_j' = c_j                                   if m_j == 0

   With ``decay == 1`` this is exactly scikit-learn's
   ``(c_j * n_j + s_j) / (n_j + m_j)``: the centre is the weighted mean of
   every point it has ever been assigned (each with the centre it was
   assigned to at the time). With ``decay < 1`` a batch ``t`` steps old
   counts ``decay ** t`` as much as the current one; Spark's
   ``halfLife`` gives ``decay = 0.5 ** (1 / half_life)``
   (:func:`decay_from_half_life`). A centre that gets no weight keeps its
   position while its count still decays, as in Spark.
3. Dying centres are reassigned as scikit-learn does. After the update, the
   centres with ``n_j' < reassignment_ratio * max(n')`` are moved onto rows of
   the batch drawn at random without replacement, at most ``int(0.5 *
   n_rows)`` of them (the ones with the smallest counts are kept when there
   are more), and their counts are set to the smallest count among the
   centres that were *not* reassigned, so they are not reassigned again at
   once. As in scikit-learn this check runs only when some count was exactly
   zero before the batch, or once ``10 * n_clusters`` rows have been seen
   since the last check.

Differences from scikit-learn 1.9 (``MiniBatchKMeans.partial_fit``)
--------------------------------------------------------------------
* **Reassignment draw.** scikit-learn draws the new positions *uniformly*
  over the batch rows, ignoring ``sample_weight`` (not proportionally to the
  squared distance, as one might expect). Here rows are drawn with
  probability proportional to their weight, so rows of weight 0 are never
  used. When every weight is equal (including ``weights=None``) the exact
  same ``random_state.choice(n_rows, replace=False, size=m)`` call as
  scikit-learn's is made, so the random stream is the same.
* **First batch.** scikit-learn's first ``partial_fit`` call always runs the
  check (every count is zero) and so immediately moves the centres that got
  no point in that batch. Here the first batch never reassigns: its empty
  centres are reassigned at the next batch (their count is still zero, so
  the check runs then).
* **Check cadence.** scikit-learn's ``partial_fit`` advances the
  ``10 * n_clusters`` counter by ``min(batch_size, rows of the first
  batch)`` at every call; here it advances by the rows of each batch. The two
  agree when all batches have the same number of rows.
* **Precision.** Counts are float64 and the update is computed in float64,
  then cast to the data's dtype; scikit-learn works in the data's dtype, so
  float32 results differ by rounding.
* **Degenerate ratios.** With ``reassignment_ratio > 1`` every centre can
  qualify, which makes scikit-learn fail (minimum of an empty array); here
  the centre with the largest count is never reassigned.
* **Forgetting** (``decay < 1``) does not exist in scikit-learn. Spark
  handles dying clusters differently (it splits the largest cluster when the
  smallest weight drops below ``1e-8`` times the largest); the scikit-learn
  reassignment above is used instead.

The nearest-centre search uses this package's backends, so a row exactly
equidistant from two centres may be labelled differently from scikit-learn.

References
----------
.. [1] D. Sculley, "Web-scale k-means clustering", Proceedings of the 19th
   International Conference on World Wide Web (WWW), 2010, pp. 1177-1178.
.. [2] scikit-learn, ``sklearn/cluster/_kmeans.py``: ``_mini_batch_step``,
   ``MiniBatchKMeans._random_reassign`` and ``MiniBatchKMeans.partial_fit``;
   ``sklearn/cluster/_k_means_minibatch.pyx``: ``_minibatch_update_dense``.
.. [3] Apache Spark MLlib, ``org.apache.spark.mllib.clustering.StreamingKMeans``
   (``decayFactor``, ``setHalfLife``),
   https://spark.apache.org/docs/latest/mllib-clustering.html#streaming-k-means
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
from array_api_compat import array_namespace
from sklearn.cluster import kmeans_plusplus

from kmeans_dask._fit.batch_rows import DeviceRows, HostRows
from kmeans_dask._fit.validation import (
    check_finite,
    check_init_array,
    check_magnitudes,
    check_weights_valid,
)
from kmeans_dask._io.inputs import check_sample_weight, host_dtype, is_device_array
from kmeans_dask._worker.results import N_REPORTED_POSITIONS

#: Rows seen between two reassignment checks, per cluster (scikit-learn's rule).
ROWS_PER_REASSIGN_CHECK = 10

#: Highest fraction of a batch's rows that may become reassigned centres.
MAX_REASSIGN_FRACTION = 0.5

STREAM_INIT_METHODS = ("k-means++", "random")


@dataclass(frozen=True)
class StreamState:
    """The model carried from one mini-batch to the next.

    Treated as immutable: :func:`minibatch_update` returns a new state and
    never writes into the arrays of the one it is given.
    """

    centers: np.ndarray
    """(k, d) cluster centres, in the data's dtype (float32 or float64)."""
    counts: np.ndarray
    """(k,) float64 accumulated (and, with ``decay < 1``, discounted) weight per centre."""
    n_batches: int = 0
    """Number of batches applied so far."""
    n_seen: float = 0.0
    """Total weight of all the rows seen so far (not discounted)."""
    rows_since_reassign_check: int = 0
    """Rows seen since reassignment was last checked (scikit-learn's cadence)."""

    @property
    def n_clusters(self) -> int:
        """Number of centres."""
        return self.centers.shape[0]


@dataclass(frozen=True)
class BatchReport:
    """What one :func:`minibatch_update` did."""

    inertia: float
    """Weighted sum of squared distances of the batch rows to their nearest centre,
    with the centres *before* the update."""
    n_reassigned: int
    """Number of centres moved onto batch rows by the reassignment step."""
    batch_weight: float
    """Total weight of the batch (its number of rows when unweighted)."""


def decay_from_half_life(half_life_batches: float) -> float:
    """Decay factor under which a batch's weight halves after ``half_life_batches``.

    Parameters
    ----------
    half_life_batches : float
        Number of batches after which a batch counts half as much as a new
        one, > 0; ``math.inf`` means no forgetting.

    Returns
    -------
    decay : float
        ``0.5 ** (1 / half_life_batches)``, in (0, 1].

    Raises
    ------
    ValueError
        If ``half_life_batches`` is not a positive number.

    Examples
    --------
    >>> decay_from_half_life(1.0)
    0.5
    >>> round(decay_from_half_life(10.0) ** 10, 12)
    0.5
    """
    if (
        isinstance(half_life_batches, bool)
        or not isinstance(half_life_batches, Real)
        or math.isnan(half_life_batches)
        or half_life_batches <= 0
    ):
        raise ValueError(
            f"half_life_batches must be a number > 0 (math.inf for no forgetting), "
            f"got {half_life_batches!r}"
        )
    return float(0.5 ** (1.0 / float(half_life_batches)))


def minibatch_update(
    state: StreamState,
    batch: Any,
    weights: Any = None,
    *,
    decay: float = 1.0,
    reassignment_ratio: float = 0.01,
    random_state: np.random.RandomState,
    backend: str = "numpy",
    first_row: int = 0,
) -> tuple[StreamState, BatchReport]:
    """Apply one mini-batch to the model (see the module docstring for the rule).

    Parameters
    ----------
    state : StreamState
        The model before the batch; it is not modified.
    batch : array-like of shape (n_rows, n_features)
        The rows of the batch, at least one; converted to the dtype of
        ``state.centers``.
    weights : array-like of shape (n_rows,), default=None
        Finite, non-negative weight of each row; None gives every row weight 1.
    decay : float, default=1.0
        Factor applied to the old counts, ``0 < decay <= 1``; 1 is the plain
        mini-batch k-means (no forgetting). See :func:`decay_from_half_life`.
    reassignment_ratio : float, default=0.01
        Centres whose count falls below this fraction of the largest count
        are moved onto random batch rows; 0 disables reassignment.
    random_state : numpy.random.RandomState
        Source of the reassignment draws; the same generator must be passed
        for every batch of a stream. Only used when a centre is reassigned.
    backend : str, default="numpy"
        Nearest-centre search backend (see :mod:`kmeans_dask.backends`).
    first_row : int, default=0
        Index of the batch's first row in its stream: messages name rows by
        it.

    Returns
    -------
    new_state : StreamState
        A new state; its arrays share no memory with ``state``'s.
    report : BatchReport
        Batch inertia (before the update), reassigned centres, batch weight.

    Raises
    ------
    TypeError
        If ``random_state`` is not a ``numpy.random.RandomState``.
    ValueError
        If the batch is empty, has the wrong number of features or
        non-finite values, if a weight is negative or non-finite, if values
        or weights are so large that the update's sums would overflow
        float64, or if ``decay`` or ``reassignment_ratio`` is out of range.
        The state and the random generator are then left untouched.
    """
    _check_decay(decay)
    _check_ratio(reassignment_ratio)
    if not isinstance(random_state, np.random.RandomState):
        raise TypeError(
            "random_state must be a numpy.random.RandomState (the same one for every batch), "
            f"got {type(random_state).__name__}"
        )
    centers = state.centers
    n_clusters, n_features = centers.shape
    data = _check_batch(batch, n_features, centers.dtype, first_row)
    n_rows = data.shape[0]
    row_weights = _check_weights(weights, n_rows, first_row)
    batch_weight = _check_magnitudes(data, row_weights, state)

    stats = data.statistics(row_weights, centers, backend)

    old_counts = np.asarray(state.counts, dtype=np.float64)
    decayed = old_counts * decay
    counts = decayed + stats.counts
    updated = centers.astype(np.float64)  # a copy: ``state.centers`` stays as it was
    hit = stats.counts > 0
    updated[hit] = (decayed[hit, None] * updated[hit] + stats.sums[hit]) / counts[hit, None]

    # scikit-learn's cadence: check when a count was zero before the batch, or
    # every ``10 * n_clusters`` rows. The first batch resets the counter but
    # never reassigns (see the module docstring).
    rows_since = state.rows_since_reassign_check + n_rows
    n_reassigned = 0
    due = bool((old_counts == 0).any()) or rows_since >= ROWS_PER_REASSIGN_CHECK * n_clusters
    if due:
        rows_since = 0
        if state.n_batches > 0 and reassignment_ratio > 0:
            n_reassigned = _reassign(
                updated, counts, data, row_weights, reassignment_ratio, random_state
            )

    new_state = StreamState(
        centers=updated.astype(centers.dtype),
        counts=counts,
        n_batches=state.n_batches + 1,
        n_seen=float(state.n_seen) + batch_weight,
        rows_since_reassign_check=rows_since,
    )
    return new_state, BatchReport(float(stats.inertia), n_reassigned, batch_weight)


def init_stream_state(
    first_batch: Any,
    weights: Any,
    n_clusters: int,
    *,
    random_state: np.random.RandomState,
    init: str | np.ndarray = "k-means++",
    backend: str = "numpy",
    first_row: int = 0,
) -> tuple[StreamState, BatchReport]:
    """Initialise the centres on the first batch, then apply that batch.

    Parameters
    ----------
    first_batch : array-like of shape (n_rows, n_features)
        The first batch; needs at least ``n_clusters`` rows. float32 stays
        float32, anything else becomes float64.
    weights : array-like of shape (n_rows,) or None
        Finite, non-negative row weights (None: all 1); used by the
        initialisation and by the update.
    n_clusters : int
        Number of centres, >= 1.
    random_state : numpy.random.RandomState
        Used for the initialisation; pass the same generator to every later
        :func:`minibatch_update` of the stream.
    init : {"k-means++", "random"} or array of shape (n_clusters, n_features), \
default="k-means++"
        "k-means++": :func:`sklearn.cluster.kmeans_plusplus` on the batch with
        the weights. "random": ``n_clusters`` distinct rows drawn with
        probability proportional to their weight (as scikit-learn's
        ``init="random"``). An array gives the initial centres.
    backend : str, default="numpy"
        Nearest-centre search backend.
    first_row : int, default=0
        Index of the batch's first row in its stream, as messages name rows.

    Returns
    -------
    state : StreamState
        The model after the first batch (``n_batches == 1``). Starting from
        zero counts, every centre that received weight sits at the weighted
        mean of its rows; the others stay at their initial position with
        count 0 (they are reassigned at the next batch, if
        ``reassignment_ratio > 0``).
    report : BatchReport
        The first batch's report (inertia w.r.t. the initial centres).

    Raises
    ------
    ValueError
        If the batch has fewer than ``n_clusters`` rows (or fewer rows of
        positive weight), if ``init`` is unknown or of the wrong shape, or
        if the batch or weights are invalid.
    """
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, Integral) or n_clusters < 1:
        raise ValueError(f"n_clusters must be an integer >= 1, got {n_clusters!r}")
    n_clusters = int(n_clusters)
    if not isinstance(random_state, np.random.RandomState):
        raise TypeError(
            "random_state must be a numpy.random.RandomState (the same one for every batch), "
            f"got {type(random_state).__name__}"
        )
    raw = first_batch if is_device_array(first_batch) else np.asarray(first_batch)
    dtype = np.float32 if host_dtype(raw.dtype) == np.float32 else np.float64
    if raw.ndim != 2:
        raise ValueError(
            f"first batch must be 2-D (n_rows, n_features), got an array of shape {raw.shape}"
        )
    n_rows, n_features = raw.shape
    if n_rows < n_clusters:
        raise ValueError(
            f"first batch has {n_rows} rows; partial_fit needs at least "
            f"n_clusters={n_clusters} rows to initialise"
        )
    data = _check_batch(raw, n_features, dtype, first_row)
    row_weights = _check_weights(weights, n_rows, first_row)
    _check_magnitudes(data, row_weights, None)  # before the initialisation computes with them

    if isinstance(init, str):
        if init not in STREAM_INIT_METHODS:
            raise ValueError(
                f"init={init!r} is not supported for partial_fit; expected one of "
                f"{list(STREAM_INIT_METHODS)} or an array of shape (n_clusters, n_features)"
            )
        n_positive = n_rows if row_weights is None else int(np.count_nonzero(row_weights))
        if n_positive < n_clusters:
            raise ValueError(
                f"first batch has {n_positive} rows of positive weight; init={init!r} needs "
                f"at least n_clusters={n_clusters} of them"
            )
        if init == "k-means++":
            centers, _ = kmeans_plusplus(
                data.on_host(), n_clusters, sample_weight=row_weights, random_state=random_state
            )
        else:
            # The same call as scikit-learn's ``init="random"`` (unit weights if None).
            sampling = np.ones(n_rows) if row_weights is None else row_weights
            rows = random_state.choice(
                n_rows, size=n_clusters, replace=False, p=sampling / sampling.sum()
            )
            centers = data.rows(rows)
    else:
        centers = check_init_array(init, n_clusters, n_features, dtype)

    start = StreamState(
        centers=np.array(centers, dtype=dtype, order="C"),
        counts=np.zeros(n_clusters, dtype=np.float64),
    )
    return minibatch_update(
        start, data, row_weights, random_state=random_state, backend=backend, first_row=first_row
    )


# --- helpers ---------------------------------------------------------------------------


def _check_decay(decay: float) -> None:
    if (
        isinstance(decay, bool)
        or not isinstance(decay, Real)
        or not math.isfinite(decay)
        or not 0 < decay <= 1
    ):
        raise ValueError(f"decay must be a number with 0 < decay <= 1, got decay={decay!r}")


def _check_ratio(ratio: float) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, Real) or not math.isfinite(ratio):
        raise ValueError(f"reassignment_ratio must be a finite number >= 0, got {ratio!r}")
    if ratio < 0:
        raise ValueError(f"reassignment_ratio must be >= 0, got reassignment_ratio={ratio}")


def _check_batch(batch: Any, n_features: int, dtype: np.dtype, first_row: int) -> HostRows:
    """The batch as rows of ``dtype`` (C-contiguous on the host), checked for shape
    and finiteness; a batch already checked is returned as it is.

    Rows are named in messages as ``first_row`` plus their index in the batch.
    """
    if isinstance(batch, HostRows):
        return batch
    device = is_device_array(batch)
    data = batch if device else np.asarray(batch)
    kind = host_dtype(data.dtype).kind
    if kind not in "biuf":
        raise TypeError(f"batch must be numeric, got dtype {data.dtype}")
    if data.ndim != 2:
        raise ValueError(
            f"batch must be 2-D (n_rows, n_features), got an array of shape {data.shape}"
        )
    if data.shape[0] == 0:
        raise ValueError("batch has 0 rows; a mini-batch needs at least one row")
    if data.shape[1] != n_features:
        raise ValueError(
            f"batch has {data.shape[1]} features, but the model has {n_features} features"
        )
    if device:
        xp = array_namespace(data)
        rows: HostRows = DeviceRows(xp.astype(data, getattr(xp, np.dtype(dtype).name)))
    else:
        rows = HostRows(np.ascontiguousarray(data, dtype=dtype))
    check_finite(*rows.nonfinite(first_row), name="batch")
    return rows


def _check_weights(weights: Any, n_rows: int, first_row: int) -> np.ndarray | None:
    """float64 weights of shape (n_rows,), finite and >= 0; None stays None."""
    values = check_sample_weight(weights, n_rows, rows_of="the batch", name="weights")
    if values is None:
        return None
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    rows = [first_row + int(r) for r in bad[:N_REPORTED_POSITIONS]]
    check_weights_valid(bad.size, rows, name="weights")
    return values


def _check_magnitudes(
    data: HostRows, weights: np.ndarray | None, state: StreamState | None
) -> float:
    """Refuse a batch whose update could overflow (with the model's state, if any);
    return the batch's weight."""
    with np.errstate(over="ignore"):  # an overflow is refused below
        batch_weight = float(data.shape[0]) if weights is None else float(weights.sum())
    # Centres lie within the range of the rows seen, which bounds every sum.
    largest = data.column_max_abs()
    total_weight = batch_weight
    if state is not None:
        largest = np.maximum(largest, np.abs(state.centers).max(axis=0))
        total_weight += float(np.sum(state.counts))
    check_magnitudes(
        largest, total_weight, data.dtype, "batch", "the largest in the batch and the centres"
    )
    return batch_weight


def _reassign(
    centers: np.ndarray,
    counts: np.ndarray,
    data: HostRows,
    weights: np.ndarray | None,
    ratio: float,
    random_state: np.random.RandomState,
) -> int:
    """Move centres with tiny counts onto random batch rows (in place); return how many.

    Mirrors the reassignment block of scikit-learn's ``_mini_batch_step``,
    with rows drawn proportionally to their weight (see the module docstring).
    """
    n_rows = data.shape[0]
    to_reassign = counts < ratio * counts.max()
    if to_reassign.all():  # only possible with ratio > 1
        to_reassign[np.argmax(counts)] = False
    n_drawable = n_rows if weights is None else int(np.count_nonzero(weights))
    limit = min(int(MAX_REASSIGN_FRACTION * n_rows), n_drawable)
    if to_reassign.sum() > limit:
        to_reassign[np.argsort(counts)[limit:]] = False
    n_reassign = int(to_reassign.sum())
    if n_reassign == 0:
        return 0
    if weights is None or bool(np.all(weights == weights[0])):
        rows = random_state.choice(n_rows, replace=False, size=n_reassign)
    else:
        rows = random_state.choice(
            n_rows, replace=False, size=n_reassign, p=weights / weights.sum()
        )
    centers[to_reassign] = data.rows(rows)
    counts[to_reassign] = np.min(counts[~to_reassign])
    return n_reassign
