"""Initial centres: k-means|| (default), k-means++ on a sample, random rows.

k-means|| follows Bahmani et al. (2012) as Spark and cuVS implement it: the
first candidate is a random row (drawn proportionally to its weight); each
of ``rounds`` passes keeps every row independently with probability
``min(1, l * w * d^2 / phi)`` where ``l = oversampling_factor * k`` and
``phi`` is the current cost, so about ``l`` candidates join per round. Each
row remembers its nearest candidate, so the candidates' weights (the weight
of the rows they attract) come for free. A weighted k-means++ and a weighted
Lloyd on the candidates, in the client process, pick the ``k`` centres.

All random draws are keyed on global row indices (:mod:`kmeans_dask._kernels.rng`),
so the centres depend on the seed and the data only: not on chunking,
worker count or task order.
"""

from __future__ import annotations

import uuid

import numpy as np
from distributed import Client, Future
from sklearn.cluster import kmeans_plusplus

from kmeans_dask._engine.hosts import ChunkHosts
from kmeans_dask._engine.mapreduce import map_pairs, send, task_keys, tree_reduce_future
from kmeans_dask._engine.pauses import watched_gather
from kmeans_dask._engine.placement import DistributedData
from kmeans_dask._fit.interrupts import interrupt_point
from kmeans_dask._fit.lloyd import local_lloyd
from kmeans_dask._fit.passes import farthest
from kmeans_dask._worker.results import (
    RankedRows,
    add_arrays,
    add_floats,
    count_after,
    merge_top,
    stack_rows,
)
from kmeans_dask._worker.tasks import (
    candidate_weights,
    candidate_weights_kept,
    fold_candidates_kept,
    random_rows,
    sample_by_cost,
    sample_by_cost_kept,
    update_nearest_candidate,
    weighted_cost,
)

# Independent random streams of one seed.
_STREAM_RANDOM = 1
_STREAM_SAMPLE = 2
_STREAM_FIRST = 3
_STREAM_ROUNDS = 16

#: Weighted Lloyd iterations on the k-means|| candidates (Spark uses 30).
CANDIDATE_LLOYD_ITER = 30
#: Rows drawn for ``init="k-means++"``: this many per cluster, at least 10,000.
SAMPLE_ROWS_PER_CLUSTER = 20
MIN_SAMPLE_ROWS = 10_000


def sample_rows(
    client: Client, data: DistributedData, count: int, seed: int, stream: int, weighted: bool
) -> RankedRows:
    """``count`` distinct random rows of the distributed data (see ``random_rows``)."""
    return data.map_reduce(
        client,
        random_rows,
        merge_top,
        count,
        seed,
        stream,
        weighted,
        name="kmeans-sample",
        leading=(count,),
    )


def init_random(client: Client, data: DistributedData, n_clusters: int, seed: int) -> np.ndarray:
    """``n_clusters`` distinct rows drawn with probability proportional to weight."""
    return sample_rows(client, data, n_clusters, seed, _STREAM_RANDOM, weighted=True).rows


def init_kmeans_plusplus(
    client: Client, data: DistributedData, n_clusters: int, seed: int
) -> np.ndarray:
    """Weighted k-means++ (scikit-learn's, greedy) on a uniform sample of rows."""
    size = min(data.n_samples, max(MIN_SAMPLE_ROWS, SAMPLE_ROWS_PER_CLUSTER * n_clusters))
    sample = sample_rows(client, data, size, seed, _STREAM_SAMPLE, weighted=False)
    return weighted_plusplus(sample.rows, sample.weights, n_clusters, seed)


def weighted_plusplus(
    points: np.ndarray, weights: np.ndarray, n_clusters: int, seed: int
) -> np.ndarray:
    """scikit-learn's greedy k-means++ on weighted points (unit weights if all are 0)."""
    if not (weights > 0).any():
        weights = np.ones_like(weights)
    centers, _ = kmeans_plusplus(
        points, n_clusters, sample_weight=weights, random_state=np.random.RandomState(seed)
    )
    return centers.astype(points.dtype)


def init_kmeans_parallel(
    client: Client,
    data: DistributedData,
    n_clusters: int,
    seed: int,
    *,
    oversampling_factor: float,
    rounds: int,
    backend: str,
) -> np.ndarray:
    """k-means|| (scalable k-means++) over the distributed chunks.

    Each row's nearest candidate stays on its worker. Through the actors, a
    round is two calls: fold in the new candidates and return the cost;
    draw the next candidates. Streamed blocks keep no per-row state: through
    the actors, which read the blocks ahead, a round is two passes that
    search all candidates so far (:func:`_streamed_candidates_on_hosts`).
    Otherwise all rounds are submitted at once as one task graph
    (:func:`_candidates_as_tasks`). All draw the same candidates.
    """
    first = sample_rows(client, data, 1, seed, _STREAM_FIRST, weighted=True).rows
    oversampling = oversampling_factor * n_clusters
    hosts = data.hosts(client)
    if hosts is not None and data.persisted:
        drawn, weights = _candidates_on_hosts(hosts, first, oversampling, rounds, seed, backend)
    elif hosts is not None:
        drawn, weights = _streamed_candidates_on_hosts(
            hosts, first, oversampling, rounds, seed, backend
        )
    else:
        drawn, weights = _candidates_as_tasks(
            client, data, first, oversampling, rounds, seed, backend
        )
    # Copies of a repeated row can be sampled together: merge equal candidates
    # (and their weights) so k-means++ sees only distinct points.
    points, inverse = np.unique(np.concatenate([first, *drawn]), axis=0, return_inverse=True)
    if len(points) <= n_clusters:
        return _top_up_with_distinct_rows(client, data, points, n_clusters, backend)
    weights = np.bincount(inverse.ravel(), weights=weights, minlength=len(points))
    centers = weighted_plusplus(points, weights, n_clusters, seed)
    return local_lloyd(
        points, weights, centers, max_iter=CANDIDATE_LLOYD_ITER, tol=0.0, backend=backend
    )


def _candidates_on_hosts(
    hosts: ChunkHosts,
    first: np.ndarray,
    oversampling: float,
    rounds: int,
    seed: int,
    backend: str,
) -> tuple[list[np.ndarray], np.ndarray]:
    """The rounds' candidates and the weights of all, through the actors."""
    tag = uuid.uuid4().hex
    phi = hosts.map_reduce(fold_candidates_kept, add_floats, first, 0, backend, tag)
    n_candidates = len(first)
    drawn: list[np.ndarray] = []
    for round_index in range(rounds):
        interrupt_point()
        stream = _STREAM_ROUNDS + round_index
        new = stack_rows(
            *hosts.map(sample_by_cost_kept, oversampling, phi, seed, stream, backend, tag)
        )
        drawn.append(new)
        phi = hosts.map_reduce(fold_candidates_kept, add_floats, new, n_candidates, backend, tag)
        n_candidates += len(new)
    weights = hosts.map_reduce(candidate_weights_kept, add_arrays, n_candidates, backend, tag)
    return drawn, weights


def _streamed_candidates_on_hosts(
    hosts: ChunkHosts,
    first: np.ndarray,
    oversampling: float,
    rounds: int,
    seed: int,
    backend: str,
) -> tuple[list[np.ndarray], np.ndarray]:
    """The rounds' candidates and the weights of all, through the actors, keeping no state."""
    candidates = first
    drawn: list[np.ndarray] = []
    for round_index in range(rounds):
        interrupt_point()
        phi = hosts.map_reduce(weighted_cost, add_floats, candidates, backend)
        stream = _STREAM_ROUNDS + round_index
        new = stack_rows(
            *hosts.map(sample_by_cost, candidates, oversampling, phi, seed, stream, backend)
        )
        drawn.append(new)
        candidates = stack_rows(candidates, new)
    weights = hosts.map_reduce(candidate_weights, add_arrays, candidates, len(candidates), backend)
    return drawn, weights


def _candidates_as_tasks(
    client: Client,
    data: DistributedData,
    first: np.ndarray,
    oversampling: float,
    rounds: int,
    seed: int,
    backend: str,
) -> tuple[list[np.ndarray], np.ndarray]:
    """The rounds' candidates and the weights of all, as one task graph.

    The cost ``phi``, the candidates a round draws and their count stay on
    the cluster as the inputs of the next round's tasks, so the rounds run
    back to back without waiting for the client.
    """
    chunks = data.chunks
    first_sent = send(client, first, "kmeans||-candidates")
    n_candidates: int | Future = len(first)
    # Persisted data keeps each row's nearest candidate on its worker and only
    # searches the new candidates; streamed data keeps nothing and searches
    # all candidates in every pass, so worker memory stays bounded.
    if data.persisted:
        states = map_pairs(
            client,
            update_nearest_candidate,
            chunks,
            [None] * len(chunks),
            first_sent,
            0,
            backend,
            name="kmeans||-cost",
        )
    else:
        all_candidates = first_sent
        states = [all_candidates] * len(chunks)
    drawn: list[Future] = []
    for round_index in range(rounds):
        cost_parts = map_pairs(client, weighted_cost, chunks, states, backend, name="kmeans||-phi")
        phi = tree_reduce_future(client, add_floats, cost_parts, name="kmeans||-phi-sum")
        # A round whose phi is 0 (every row is a candidate) draws nothing.
        samples = map_pairs(
            client,
            sample_by_cost,
            chunks,
            states,
            oversampling,
            phi,
            seed,
            _STREAM_ROUNDS + round_index,
            backend,
            name="kmeans||-sample",
        )
        new = client.submit(stack_rows, *samples, key=task_keys("kmeans||-drawn", 1)[0])
        drawn.append(new)
        if data.persisted:
            states = map_pairs(
                client,
                update_nearest_candidate,
                chunks,
                states,
                new,
                n_candidates,
                backend,
                name="kmeans||-cost",
            )
        else:
            all_candidates = client.submit(
                stack_rows, all_candidates, new, key=task_keys("kmeans||-candidates", 1)[0]
            )
            states = [all_candidates] * len(chunks)
        n_candidates = client.submit(
            count_after, n_candidates, new, key=task_keys("kmeans||-count", 1)[0]
        )
    weight_parts = map_pairs(
        client, candidate_weights, chunks, states, n_candidates, backend, name="kmeans||-weights"
    )
    weights_sent = tree_reduce_future(
        client, add_arrays, weight_parts, name="kmeans||-weights-sum"
    )
    *rounds_drawn, weights = watched_gather(client, [*drawn, weights_sent])
    return rounds_drawn, weights


def _top_up_with_distinct_rows(
    client: Client, data: DistributedData, points: np.ndarray, n_clusters: int, backend: str
) -> np.ndarray:
    """``points`` plus, one at a time, the row farthest from all chosen so far.

    A row at distance > 0 from every chosen centre is new, so the centres are
    distinct whenever the data has ``n_clusters`` distinct rows; only when it
    has fewer are duplicates unavoidable (the fit then warns about it).
    """
    chosen = list(points)
    while len(chosen) < n_clusters:
        centers = np.array(chosen, dtype=points.dtype)
        far = farthest(client, data, centers, backend, 1)
        if far.score[0] <= 0:
            break  # every row equals a chosen centre
        chosen.append(far.rows[0])
    while len(chosen) < n_clusters:
        chosen.append(chosen[len(chosen) % len(points)])
    return np.array(chosen, dtype=points.dtype)
