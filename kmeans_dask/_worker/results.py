"""What a pass over a chunk returns: small host NumPy values, whatever the chunk's device.

Each is combined with its kind from other chunks in the fixed reduction tree
(:func:`combine_stats`, :func:`combine_changes`, :meth:`ChunkSummary.merge`,
:func:`merge_top`, :func:`add_arrays`, ...), in an order that depends only on the number of
chunks, so results are the same for any placement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import reduce
from typing import Any, TypeVar

import numpy as np
from distributed.protocol import dask_deserialize, dask_serialize
from distributed.protocol.serialize import deserialize, serialize

T = TypeVar("T")

#: How many offending positions an error message quotes.
N_REPORTED_POSITIONS = 5

#: Rows farthest from their centre that a chunk task reports with its
#: statistics: an iteration that empties up to this many clusters relocates
#: them onto these rows without another pass over the data.
FAR_ROWS = 32


def sent_field_by_field(cls: type[T]) -> type[T]:
    """Have distributed send the dataclass ``cls`` as the list of its fields.

    Each field is serialized on its own: an array field travels with
    distributed's own NumPy serializer, and a field that is itself sent field
    by field (the statistics inside :class:`Checked`) in its own way, rather
    than inside a pickle of the whole object. A chunk's statistics at k =
    16384, d = 128 (16 MiB) reached the client in 24 ms instead of 42
    (median of 12, one LocalCluster worker; RESULTS.md, "Statistics sent
    field by field"); inside :class:`Checked`, in 22-30 ms instead of 58-77.
    """
    names = [item.name for item in fields(cls)]

    @dask_serialize.register(cls)
    def _serialize(value: T) -> tuple[dict, list]:
        header, frames = serialize(
            [getattr(value, name) for name in names],
            serializers=("dask", "pickle"),
            iterate_collection=True,
        )
        return {"fields": header}, frames

    @dask_deserialize.register(cls)
    def _deserialize(header: dict, frames: list) -> T:
        return cls(*deserialize(header["fields"], frames))

    return cls


@dataclass
class ChunkSummary:
    """What one pass over a chunk learns for validation and the tolerance."""

    n_rows: int
    nonfinite_count: int
    nonfinite_positions: list[tuple[int, int]]
    column_mean: np.ndarray
    column_m2: np.ndarray
    weight_sum: float
    bad_weight_count: int = 0
    bad_weight_rows: list[int] = field(default_factory=list)
    digest: int = 0
    """:func:`~kmeans_dask._kernels.block_kernels.content_digest` of the rows and
    weights: the same for any chunking, so it identifies the data for checkpoints."""

    @property
    def refused(self) -> bool:
        """Whether the rows hold values no fit accepts: non-finite values or invalid weights."""
        return self.nonfinite_count > 0 or self.bad_weight_count > 0

    def merge(self, other: ChunkSummary) -> ChunkSummary:
        """Combine two summaries (Chan et al.'s parallel variance update)."""
        n_a, n_b = self.n_rows, other.n_rows
        n = n_a + n_b
        if n_b == 0:
            return self
        if n_a == 0:
            return other
        # Overflowing values are refused from the merged summary (raise_for_summary).
        with np.errstate(over="ignore", invalid="ignore"):
            delta = other.column_mean - self.column_mean
            mean = self.column_mean + delta * (n_b / n)
            m2 = self.column_m2 + other.column_m2 + delta**2 * (n_a * n_b / n)
        return ChunkSummary(
            n_rows=n,
            nonfinite_count=self.nonfinite_count + other.nonfinite_count,
            nonfinite_positions=(self.nonfinite_positions + other.nonfinite_positions)[
                :N_REPORTED_POSITIONS
            ],
            column_mean=mean,
            column_m2=m2,
            weight_sum=self.weight_sum + other.weight_sum,
            bad_weight_count=self.bad_weight_count + other.bad_weight_count,
            bad_weight_rows=(self.bad_weight_rows + other.bad_weight_rows)[:N_REPORTED_POSITIONS],
            digest=(self.digest + other.digest) % 2**64,
        )


@sent_field_by_field
@dataclass
class Checked:
    """A pass's value over some chunks, with the data check's summary of each of them."""

    summaries: tuple[ChunkSummary, ...]
    """One per chunk, in chunk order."""
    value: Any | None
    """The pass's value; None when a chunk's summary is :attr:`~ChunkSummary.refused`
    (the pass did not run over rows the fit refuses)."""

    def summary(self) -> ChunkSummary:
        """The chunks' summaries merged in chunk order (as a pass of its own merges them)."""
        return reduce(ChunkSummary.merge, self.summaries)


def combine_checked(combine: Callable[..., Any], *parts: Checked) -> Checked:
    """``combine`` the parts' values, in order, keeping every chunk's summary."""
    values = [part.value for part in parts]
    return Checked(
        tuple(summary for part in parts for summary in part.summaries),
        None if any(value is None for value in values) else combine(*values),
    )


def nonfinite_positions(data: np.ndarray, offset: int = 0) -> tuple[int, list[tuple[int, int]]]:
    """Count non-finite entries of host ``data`` and return the first few (row, column)."""
    finite = np.isfinite(data)
    if finite.all():
        return 0, []
    bad_rows, bad_cols = np.nonzero(~finite)
    positions = [
        (int(r) + offset, int(c))
        for r, c in zip(
            bad_rows[:N_REPORTED_POSITIONS], bad_cols[:N_REPORTED_POSITIONS], strict=False
        )
    ]
    return int(bad_rows.size), positions


@dataclass
class RankedRows:
    """Rows of a chunk with the highest ``score``, best first (host arrays)."""

    score: np.ndarray
    index: np.ndarray
    """Global row indices."""
    rows: np.ndarray
    weights: np.ndarray
    labels: np.ndarray
    """Assigned centre of each row, or -1 where no assignment was made."""

    def head(self, count: int) -> RankedRows:
        """The ``count`` best rows."""
        return RankedRows(
            self.score[:count],
            self.index[:count],
            self.rows[:count],
            self.weights[:count],
            self.labels[:count],
        )


def merge_top(count: int, *parts: RankedRows) -> RankedRows:
    """Keep the ``count`` best rows over several chunks; ties go to the lower index.

    The outcome depends only on the rows' scores and global indices, so it is
    the same for every chunking and worker count.
    """
    score = np.concatenate([p.score for p in parts])
    index = np.concatenate([p.index for p in parts])
    order = np.lexsort((index, -score))[:count]
    return RankedRows(
        score[order],
        index[order],
        np.concatenate([p.rows for p in parts])[order],
        np.concatenate([p.weights for p in parts])[order],
        np.concatenate([p.labels for p in parts])[order],
    )


@sent_field_by_field
@dataclass
class ClusterStats:
    """Partial Lloyd statistics: per-cluster weighted sums and counts, inertia."""

    sums: np.ndarray
    """(k, d) float64 weighted sum of the points assigned to each cluster."""
    counts: np.ndarray
    """(k,) float64 total weight assigned to each cluster."""
    inertia: float
    """Weighted sum of squared distances to the assigned centres."""
    farthest: RankedRows | None = None
    """The (at most :data:`FAR_ROWS`) rows farthest from their assigned centre."""


@sent_field_by_field
@dataclass
class StatsChange:
    """What a pass from kept labels changed in a chunk's statistics.

    A pass that starts each row from its previous label and moves few rows
    need not send the ``k x d`` sums of all its rows (16 MiB at k = 16384,
    d = 128, per chunk and pass): only what the moved rows took from the
    clusters they left and gave to those they joined. The counts (``k``
    floats) and the inertia are whole, so they are exactly those of a full
    pass; the sums are the previous pass's plus the change, equal to a full
    pass's up to float64 rounding.
    """

    clusters: np.ndarray
    """(c,) int64 the clusters whose sums changed, ascending, distinct."""
    sums: np.ndarray
    """(c, d) float64 the change of those clusters' weighted sums."""
    counts: np.ndarray
    """(k,) float64 total weight assigned to each cluster (whole, not a change)."""
    inertia: float
    """Weighted sum of squared distances to the assigned centres (whole)."""
    farthest: RankedRows | None = None
    """The (at most :data:`FAR_ROWS`) rows farthest from their assigned centre."""
    complete: bool = True
    """False where a chunk had lost the labels the change is from (a worker lost,
    a task run elsewhere): its sums are then unknown, and the pass's statistics
    must be counted afresh from the labels it kept."""

    @classmethod
    def of_unknown_sums(cls, stats: ClusterStats) -> StatsChange:
        """An incomplete change: the whole counts, inertia and farthest rows of ``stats``."""
        no_sums = np.empty((0, stats.sums.shape[1]))
        no_clusters = np.empty(0, np.int64)
        return cls(no_clusters, no_sums, stats.counts, stats.inertia, stats.farthest, False)

    def applied_to(self, previous: ClusterStats) -> ClusterStats:
        """The statistics of the pass: ``previous`` (the statistics of the labels this
        change starts from) with the change; ``previous`` is left as it was."""
        sums = previous.sums.copy()
        sums[self.clusters] += self.sums
        return ClusterStats(sums, self.counts, self.inertia, self.farthest)


def combine_changes(*parts: StatsChange) -> StatsChange:
    """Add the changes of several chunks, in the order given (fixed, so reproducible)."""
    clusters = np.concatenate([part.clusters for part in parts])
    sums = np.concatenate([part.sums for part in parts])
    order = np.argsort(clusters, kind="stable")
    distinct, starts = np.unique(clusters[order], return_index=True)
    summed = np.add.reduceat(sums[order], starts) if distinct.size else sums[:0]
    counts, inertia, farthest = _add_whole(parts)
    complete = all(part.complete for part in parts)
    return StatsChange(distinct, summed, counts, inertia, farthest, complete)


def statistics_nbytes(n_clusters: int, n_features: int) -> int:
    """Bytes of one chunk's partial sums and counts (what every iteration moves)."""
    return 8 * n_clusters * (n_features + 1)


def combine_stats(*parts: ClusterStats) -> ClusterStats:
    """Add partial statistics, in the order given (fixed, so reproducible)."""
    sums = parts[0].sums.copy()
    for part in parts[1:]:
        sums += part.sums
    return ClusterStats(sums, *_add_whole(parts))


def _add_whole(
    parts: tuple[ClusterStats, ...] | tuple[StatsChange, ...],
) -> tuple[np.ndarray, float, RankedRows | None]:
    """The counts and inertia of ``parts`` added in the order given, and their
    farthest rows merged (None unless every part has them)."""
    counts = parts[0].counts.copy()
    inertia = parts[0].inertia
    for part in parts[1:]:
        counts += part.counts
        inertia += part.inertia
    farthest = None
    if all(part.farthest is not None for part in parts):
        farthest = merge_top(FAR_ROWS, *(part.farthest for part in parts))
    return counts, inertia, farthest


@dataclass
class NearestCandidate:
    """Per-row state kept next to a chunk during k-means|| (in the chunk's memory)."""

    sq_dist: Any
    """Squared distance of each row to its nearest candidate so far (float64)."""
    index: Any
    """Index of that candidate in the growing candidate list (int64)."""


def add_arrays(*arrays: np.ndarray) -> np.ndarray:
    """Sum arrays in the order given."""
    total = arrays[0].copy()
    for array in arrays[1:]:
        total += array
    return total


def add_floats(*values: float) -> float:
    """Sum floats in the order given."""
    return float(sum(values))


def stack_rows(*blocks: np.ndarray) -> np.ndarray:
    """The rows of ``blocks``, one after the other."""
    return np.concatenate(blocks)


def count_after(count: int, rows: np.ndarray) -> int:
    """``count`` plus the number of ``rows``."""
    return count + len(rows)
