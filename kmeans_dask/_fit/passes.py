"""The distributed passes of a Lloyd run, one function each.

Every row searched; each row from the label the last pass kept next to its
chunk, among the moved centres or among its centre's neighbours; the final
pass and its labels; the rows farthest from their centres, where an empty
cluster moves. Each maps a task of :mod:`kmeans_dask._worker.tasks` over the
chunks, through the fit's actors or as tasks
(:meth:`~kmeans_dask._engine.placement.DistributedData.map_reduce`), and
reduces the statistics in a fixed tree.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import numpy as np
from distributed import Client, Future

from kmeans_dask._engine.mapreduce import map_chunks, send, tree_reduce
from kmeans_dask._engine.placement import DistributedData
from kmeans_dask._worker.bounds import BoundsTicket
from kmeans_dask._worker.results import (
    ClusterStats,
    RankedRows,
    StatsChange,
    combine_changes,
    combine_stats,
    merge_top,
    statistics_nbytes,
)
from kmeans_dask._worker.tasks import (
    changes_from_moved_centers,
    chunk_labels,
    chunk_stats,
    farthest_rows,
    kept_labels,
    stats_from_candidates,
    stats_from_moved_centers,
    stats_from_row_candidates,
    stats_keeping_labels,
    stats_keeping_row_candidates,
    stats_of_kept_labels,
)

if TYPE_CHECKING:
    from kmeans_dask.backends.approximate import CandidateBackend


def search_statistics(
    client: Client,
    data: DistributedData,
    centers: np.ndarray,
    backend: str,
    ticket: BoundsTicket | None,
    name: str,
    labels_tag: Hashable | None = None,
) -> ClusterStats:
    """One assignment pass's statistics, combined on the cluster up to the root if large.

    With ``labels_tag``, persisted chunks keep their rows' labels under it
    (:func:`~kmeans_dask._worker.tasks.stats_keeping_labels`), for
    :func:`labels_kept`; streamed chunks keep nothing.
    """
    keep = labels_tag is not None and data.persisted
    return data.map_reduce(
        client,
        stats_keeping_labels if keep else chunk_stats,
        combine_stats,
        centers,
        backend,
        ticket,
        *((labels_tag,) if keep else ()),
        name=name,
        result_bytes=statistics_nbytes(*centers.shape),
    )


def statistics_from_kept_labels(
    client: Client,
    data: DistributedData,
    task: Callable[..., Any],
    centers: np.ndarray,
    search: str,
    tag: tuple[str, int],
    how: tuple[Any, ...],
    name: str,
    combine: Callable[..., Any] = combine_stats,
) -> Any:
    """A pass's statistics (combined by ``combine``), each row searched from the label
    the previous pass kept next to its chunk under ``(tag[0], tag[1] - 1)``; its new
    label is kept under ``tag``.

    ``task`` is :func:`~kmeans_dask._worker.tasks.stats_from_moved_centers`
    (``how``: the moved centres and their positions before the move, after
    an exact pass; each row whose centre did not move, or moved nearer to
    it, among those alone), or one whose chunks return changes, combined by
    :func:`~kmeans_dask._worker.results.combine_changes`
    (:func:`statistics_from_changes`):
    :func:`~kmeans_dask._worker.tasks.stats_from_candidates` (``how``: the
    neighbour table; each row among its previous centre's neighbours) or
    :func:`~kmeans_dask._worker.tasks.stats_from_row_candidates` (``how``:
    the run, ``m``, the centres every row scores and whether it is the last
    pass; each row among its own candidates).
    """
    return data.map_reduce(
        client,
        task,
        combine,
        centers,
        search,
        tag,
        (tag[0], tag[1] - 1),
        *how,
        name=name,
        result_bytes=statistics_nbytes(*centers.shape),
    )


def moved_centers_statistics(
    client: Client,
    data: DistributedData,
    previous_and_centers: tuple[np.ndarray, np.ndarray],
    moved: np.ndarray,
    search: str,
    tag: tuple[str, int],
    name: str,
    counted: ClusterStats | None = None,
) -> ClusterStats:
    """A moved-centre pass (:func:`statistics_from_kept_labels`) after the centres
    ``moved`` left ``previous_and_centers[0]`` for ``[1]``: the tasks get the moved
    centres and where they were. From approximate labels, the chunks send what
    they changed, added to ``counted`` (:func:`statistics_from_changes`); from an
    exact pass's, whole statistics, those of a plain pass bit for bit."""
    previous, centers = previous_and_centers
    how = (moved, previous[moved])
    if counted is not None:
        return statistics_from_changes(
            client, data, changes_from_moved_centers, centers, search, tag, how, name, counted
        )
    return statistics_from_kept_labels(
        client, data, stats_from_moved_centers, centers, search, tag, how, name
    )


def candidate_statistics(
    client: Client,
    data: DistributedData,
    candidates: CandidateBackend,
    previous_and_centers: tuple[np.ndarray, np.ndarray],
    neighbours: np.ndarray | None,
    search: str,
    tag: tuple[str, int],
    name: str,
    after_exact: bool,
    counted: ClusterStats,
) -> tuple[ClusterStats, np.ndarray]:
    """A candidate pass (:func:`statistics_from_changes`, added to ``counted``) after
    the centres moved from ``previous_and_centers[0]`` to ``[1]``, and its neighbour
    table (refined from ``neighbours``, the last pass's, if any), for the next pass.
    Right after an exact pass (``after_exact``) no row goes to IVF for its centre's
    move, and a table made afresh is wider (:meth:`CandidateBackend.neighbours`,
    :meth:`CandidateBackend.table`)."""
    previous, centers = previous_and_centers
    neighbours = candidates.neighbours(
        centers, neighbours, wide=after_exact, rows_dtype=data.dtype
    )
    table = candidates.table(centers, previous, neighbours, after_exact=after_exact)
    stats = statistics_from_changes(
        client, data, stats_from_candidates, centers, search, tag, (table,), name, counted
    )
    return stats, neighbours


def row_candidate_statistics(
    client: Client,
    data: DistributedData,
    centers: np.ndarray,
    search: str,
    tag: tuple[str, int],
    m: int,
    name: str,
    *,
    first: bool,
    everyone: np.ndarray | None = None,
    last: bool = False,
    counted: ClusterStats | None = None,
) -> ClusterStats:
    """A pass with each row's own candidates: the ``first`` searches with IVF and
    keeps each row's ``m`` nearest centres in its nearest IVF list
    (:func:`~kmeans_dask._worker.tasks.stats_keeping_row_candidates`); the
    others search each row among its last centre, those and the centres
    ``everyone`` (:func:`~kmeans_dask._worker.tasks.stats_from_row_candidates`),
    the ``last`` dropping them, and add what they changed to ``counted``
    (:func:`statistics_from_changes`). Labels are kept under ``tag``, the
    candidates under the run's ``tag[0]``.
    """
    run = tag[0]
    if not first:
        if counted is None:
            raise ValueError("a later row-candidate pass adds its changes to the last pass's")
        everyone = np.empty(0, np.int32) if everyone is None else everyone.astype(np.int32)
        how = (run, m, everyone, last)
        return statistics_from_changes(
            client, data, stats_from_row_candidates, centers, search, tag, how, name, counted
        )
    return data.map_reduce(
        client,
        stats_keeping_row_candidates,
        combine_stats,
        centers,
        search,
        tag,
        run,
        m,
        name=name,
        result_bytes=statistics_nbytes(*centers.shape),
    )


def statistics_from_changes(
    client: Client,
    data: DistributedData,
    task: Callable[..., StatsChange],
    centers: np.ndarray,
    search: str,
    tag: tuple[str, int],
    how: tuple[Any, ...],
    name: str,
    counted: ClusterStats,
) -> ClusterStats:
    """:func:`statistics_from_kept_labels` of a ``task`` whose chunks send what their
    moved rows changed (:class:`~kmeans_dask._worker.results.StatsChange`), added to
    ``counted``, the statistics of the previous pass (before any empty cluster was
    relocated).

    An approximate pass from kept labels moves few rows, and the full ``k x d``
    sums of every chunk (16 MiB at k = 16384, d = 128) need not be made and
    sent. Where a chunk had lost the labels it started from, the statistics of
    the new labels are counted in a second pass
    (:func:`~kmeans_dask._worker.tasks.stats_of_kept_labels`).
    """
    change = statistics_from_kept_labels(
        client, data, task, centers, search, tag, how, name, combine=combine_changes
    )
    if change.complete:
        return change.applied_to(counted)
    return data.map_reduce(
        client,
        stats_of_kept_labels,
        combine_stats,
        centers,
        search,
        tag,
        name=f"{name}-recount",
        result_bytes=statistics_nbytes(*centers.shape),
    )


def labels_kept(
    client: Client,
    data: DistributedData,
    centers: np.ndarray,
    backend: str,
    tag: Hashable,
    spent_bounds: Hashable | None = None,
) -> list[Future] | list[Any]:
    """Per-chunk labels of the pass that kept them under ``tag`` (none if streamed).

    Futures, or, where the labels go to the client and actors serve the
    chunks, the arrays themselves, handed over in one call per worker rather
    than a task per chunk. A chunk whose worker lost them (a task run
    elsewhere, a chunk recomputed) labels its rows afresh with ``centers``,
    the centres of that pass. The Hamerly bounds kept under ``spent_bounds``
    are dropped.
    """
    if not data.persisted:
        return []
    engine = data.hosts(client) if data.labels_to_client else None
    if engine is not None:
        return engine.map(kept_labels, centers, backend, tag, spent_bounds)
    return map_chunks(
        client,
        kept_labels,
        data.chunks,
        send(client, centers, "kmeans-centers"),
        backend,
        tag,
        spent_bounds,
        name="kmeans-labels",
    )


def farthest_or_reported(
    client: Client,
    data: DistributedData,
    centers: np.ndarray,
    backend: str,
    reported: RankedRows,
    count: int,
) -> RankedRows:
    """The ``count`` rows farthest from the centre ``backend`` assigns: ``reported`` if enough."""
    if len(reported.index) >= count:
        return merge_top(count, reported)
    return farthest(client, data, centers, backend, count)


def final_pass(
    client: Client,
    data: DistributedData,
    centers: np.ndarray,
    backend: str,
    ticket: BoundsTicket | None,
) -> tuple[ClusterStats, list[Future]]:
    """Statistics of the final centres and per-chunk label futures (none if streamed).

    Through the actors, the labels stay with the chunks until
    :func:`labels_kept` takes them: in one call per worker where they go to
    the client, else by one task per chunk, which this pass does not wait for
    (:func:`~kmeans_dask._fit.cluster_fit.labels_from` does, before the fit
    returns).
    """
    if not data.persisted:  # streamed chunks keep no labels
        return search_statistics(client, data, centers, backend, ticket, "kmeans-final-stats"), []
    chunks = data.chunks
    engine = data.hosts(client)
    if engine is not None:
        tag = uuid.uuid4().hex
        final = engine.map_reduce(
            stats_keeping_labels,
            combine_stats,
            centers,
            backend,
            ticket,
            tag,
            result_bytes=statistics_nbytes(*centers.shape),
        )
        return final, labels_kept(client, data, centers, backend, tag)
    centers_future = send(client, centers, "kmeans-centers")
    pairs = map_chunks(
        client, chunk_labels, chunks, centers_future, backend, ticket, name="kmeans-label"
    )
    # Each pair's parts, split where the pair is.
    labels = map_chunks(client, operator.getitem, pairs, 0, name="kmeans-labels")
    stats_parts = map_chunks(client, operator.getitem, pairs, 1, name="kmeans-final-stats")
    final = tree_reduce(
        client,
        combine_stats,
        stats_parts,
        name="kmeans-reduce",
        result_bytes=statistics_nbytes(*centers.shape),
    )
    return final, labels


def farthest(
    client: Client, data: DistributedData, centers: np.ndarray, backend: str, count: int
) -> RankedRows:
    """The ``count`` rows of the distributed data farthest from the centre ``backend`` assigns."""
    return data.map_reduce(
        client,
        farthest_rows,
        merge_top,
        centers,
        backend,
        count,
        name="kmeans-far",
        leading=(count,),
    )
