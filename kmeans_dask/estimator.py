"""The scikit-learn estimator: a thin layer over the functions of this package.

``KMeans`` validates parameters and data, opens (or finds) a Dask client,
puts the data on the workers once and hands it to the initialisation and
Lloyd functions. Everything it computes lives in those functions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import dask.array as da
import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.utils.validation import check_is_fitted

from kmeans_dask._fit.apply import (
    center_distances_of,
    predict_labels,
    raise_if_nonfinite,
    weighted_inertia,
)
from kmeans_dask._fit.cluster_fit import fit_on_cluster
from kmeans_dask._fit.fit_request import resolve_fit
from kmeans_dask._fit.guards import unchanged_on_error, validated_params, warn_if_incomplete
from kmeans_dask._fit.history import History
from kmeans_dask._fit.searches import client_backend
from kmeans_dask._fit.stream_fit import local_batch, resumed_stream, stream_batches, stream_step
from kmeans_dask._fit.validation import (
    validate_params,
)
from kmeans_dask._io.inputs import (
    as_host_array,
    check_device_batch,
    check_input,
    check_sample_weight,
    is_dask_array,
    is_device_array,
)
from kmeans_dask._io.model_files import load_estimator, save_estimator


class KMeans(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator):
    """K-means clustering by a distributed Lloyd loop on Dask.

    Each iteration assigns every worker-resident chunk of rows to its nearest
    centre and tree-reduces per-cluster sums in a fixed order, so the result
    does not depend on the number of workers. The fit runs on the active
    ``distributed.Client``'s cluster, else on a ``LocalCluster`` started for
    it (whose workers are threads of this process for rows already in its
    memory, processes for Dask arrays and Zarr stores). Distances are
    computed in the data's dtype (float32 stays float32; other types become
    float64), sums and inertia in float64.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : {"k-means||", "k-means++", "hybrid", "random"} or array of shape \
(n_clusters, n_features), default="k-means||"
        "k-means||": scalable k-means++ (Bahmani et al.) over the distributed
        data. "k-means++": greedy k-means++ on a sample of ``max(10000, 20 *
        n_clusters)`` rows. "hybrid": k-means to convergence on a sample of
        ``init_sample_size`` rows. "random": distinct rows drawn with
        probability proportional to their weight. An array gives the centres.
    n_init : int or "auto", default="auto"
        Number of initialisations; the run with the lowest final inertia is
        kept. "auto", as scikit-learn: 10 for ``init="random"`` (one draw of
        random rows often starts two centres in one cluster), else 1.
        Must be 1 or "auto" when ``init`` is an array.
    max_iter : int, default=300
        Maximum number of Lloyd iterations per run.
    tol : float, default=1e-4
        Convergence tolerance, defined as in scikit-learn: the run stops when
        the sum over clusters of the squared distance the centres moved in
        an iteration is at most ``tol`` times the mean of the per-feature
        variances of X.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation; draws are keyed on global row indices, so
        a seed gives the same result for any chunking and number of workers.
    backend : {"auto", "numpy", "faiss-cpu", "faiss-gpu", "cupy"}, default="auto"
        Nearest-centroid search: "numpy" (compiled kernels, or BLAS GEMM
        for large k*d), "faiss-cpu" (``faiss.IndexFlatL2``), "faiss-gpu"
        (``faiss.GpuIndexFlatL2`` on host rows; the ``faiss-gpu`` extra),
        "cupy" (rows on each worker's GPU for the whole fit; the ``gpu``
        extra); "auto": "cupy" for CuPy blocks, else "numpy".
    assign : {"exact", "ivf", "hnsw", "candidates", "auto"}, default="exact"
        The Lloyd iterations' search: "exact" with ``backend``; "ivf" and
        "hnsw" through a Faiss index over the centres (approximate);
        "candidates": a first iteration that searches exactly below
        k = 8192 with d >= 128 (else with IVF, and then IVF until the
        centres settle), then each row among the ``m`` centres nearest to its
        previous centre (its label of the previous iteration, kept next to
        its chunk; twice as many right after the exact iteration; chunks
        whose labels are not kept, e.g. streamed from Zarr, or were lost
        with a worker, chunks where a sample of rows finds nearer centres
        than the candidates, and rows whose centre moved too far, search
        with IVF, or exactly when fewer than ``16 sqrt(k)`` rows of a chunk
        do). From k = 8192 the first iteration's IVF search keeps instead
        each row's own ``m`` candidates, its nearest centres in the IVF list
        nearest to it, and later iterations search each row among those, its
        last centre, the centres whose clusters emptied since and those that
        moved far in the last update (a chunk whose sample misses too much,
        or that lost them, searches with IVF again and keeps new ones: ``m``
        int32 per row next to each chunk). "auto" takes "candidates" where it
        measured faster (k >= 4096). Initialisation and ``predict`` are
        exact; the final pass (``labels_``, ``inertia_``) searches as the
        iterations do unless ``assign_options={"exact_final": True}``. The
        approximate searches are deterministic for the same
        data, chunking and initial centres; "candidates" also depends on
        which chunks kept their labels, so after a lost worker, a task run
        away from its chunk's worker, or a resumed checkpoint, its centres
        can differ from an uninterrupted fit's (within its approximation).
    assign_options : dict, optional
        Options of the approximate search: ``nlist``, ``nprobe`` for "ivf"
        (defaults ``sqrt(k)``, ``2 sqrt(k)`` from k = 16384, and 8; without
        ``nprobe``, the iteration that ``max_iter`` ends probes 12, at most
        ``nlist``, where it is not exact, see ``algorithm``), ``m``,
        ``ef_search`` for "hnsw"; ``m`` (default ``max(16, 1024 // d)``),
        ``nlist``, ``nprobe`` (of its IVF searches) for "candidates".
        With any approximate search, ``exact_final`` (default False): the
        final pass is approximate too ("candidates": each row among its last
        centre's neighbours) and no iteration is exact (see ``algorithm``)
        but the first of "candidates" below k = 8192 with d >= 128, so no
        other pass searches every row exactly. ``labels_`` and ``inertia_``
        are then those of that pass, and ``labels_`` can differ from
        ``predict`` on the rows it misses. True makes ``labels_`` the exact
        nearest centres (``labels_`` equal to ``predict(X)``, as
        scikit-learn's), for one more exact pass over all the rows: at
        100k x 128 on a 2-core AMD EPYC Zen 4, k = 4096, the fit took
        1.10 s without it, 1.79 s with it and 2.52 s with
        ``assign="exact"``; at k = 16384 1.58 s, 4.31 s and 5.43 s; the
        final centres within 0.001% and 0.19% of the exact fit's inertia
        (``scripts/bench_assign_fit.py``, README "Speed"). With
        ``algorithm="auto"``, once an update moves at most an eighth of the
        centres (a sixteenth once a candidate pass has made its neighbour
        table), a pass searches each row from its last label among the
        moved centres alone, with the exact search (labels at least as near
        as that label).
        A fit resumed from a checkpoint whose runs had all finished keeps no
        labels to start from: its one pass is exact.
    algorithm : {"auto", "lloyd", "hamerly"}, default="auto"
        "hamerly" keeps per-row distance bounds (Hamerly 2010; 20 bytes a
        row of worker memory) so rows whose centre cannot change skip the
        search, with the result of "lloyd". "auto" starts bounds once the
        centres settle (exact "numpy" search); until then, after an exact
        pass, it searches each row whose centre did not move, or moved
        nearer to it, among the centres that moved alone, while at most a
        quarter of them moved
        (half from k = 1024; none below k = 128), with the same result
        again. "lloyd" searches every row. With an approximate ``assign``,
        "auto" with ``exact_final`` makes the iteration ``max_iter`` ends
        and those after an update that moved that few centres exact
        ("numpy" ``backend``), so the exact final pass costs little
        (without ``exact_final`` none is exact, see ``assign_options``).
        Data streamed
        from Zarr always runs "lloyd".
    engine : {"auto", "tasks", "actors"}, default="auto"
        How the passes over the data reach the workers: "tasks", one Dask
        task per chunk and pass (shown in the dashboard's task stream);
        "actors", one actor per worker called directly by the client,
        skipping the scheduler's round trip (the same result bit for bit).
        "auto" takes actors unless the per-chunk statistics gathered each
        iteration exceed 64 MiB. Streamed Zarr blocks are read ahead of the
        work on them, within a sixteenth of each worker's memory limit.
    oversampling_factor : float, default=2.0
        k-means|| draws about ``oversampling_factor * n_clusters`` candidates
        per round.
    init_rounds : int, default=5
        Number of k-means|| sampling rounds (passes over the data).
    init_sample_size : int, float or None, default=None
        Rows sampled by ``init="hybrid"`` into the client: a number, a
        fraction in (0, 1], or None for ``max(20000, 100 * n_clusters)``.
    persist : bool or None, default=None
        Keep the data in worker memory for the fit. None: unless it exceeds
        half the workers' memory. False (Zarr input) streams row blocks from
        the store in every pass.
    batch_size : int, default=65536
        Rows per batch when :meth:`fit_stream` reads a Zarr array.
    decay : float, default=1.0
        Streaming only: factor applied to the accumulated counts before each
        :meth:`partial_fit` batch (``0 < decay <= 1``; 1 never forgets, a
        half-life of ``h`` batches is ``decay = 0.5 ** (1 / h)``).
    reassignment_ratio : float, default=0.01
        Streaming only: centres whose count falls below this fraction of the
        largest are moved onto random rows of the batch (0 disables it).
    verbose : int, default=0
        When > 0, show progress and the dashboard link of a started cluster.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Final centres (NumPy, the data's float dtype).
    labels_ : ndarray or dask.array of shape (n_samples,)
        Index of each training row's centre (a Dask array for Dask input).
    inertia_ : float
        Weighted sum of squared distances of the rows to their closest
        final centre.
    n_iter_ : int
        Lloyd iterations run by the kept initialisation.
    history_ : History (a list of IterationRecord)
        Per-iteration inertia, centre shift, empty clusters and seconds of
        the kept run (``history_.to_pandas()`` gives a DataFrame).
    cluster_weights_ : ndarray of shape (n_clusters,)
        Total weight of each centre (after :meth:`partial_fit`: the stream's
        accumulated counts).
    n_steps_ : int
        Batches seen by :meth:`partial_fit` (0 after :meth:`fit`).
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when X is a DataFrame with string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from distributed import Client, LocalCluster
    >>> from kmeans_dask import KMeans
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]], dtype=float)
    >>> with LocalCluster(n_workers=1, processes=False) as cluster, Client(cluster):
    ...     model = KMeans(n_clusters=2, random_state=0).fit(X)
    >>> sorted(model.cluster_centers_.tolist())
    [[1.0, 2.0], [10.0, 2.0]]
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: str | np.ndarray = "k-means||",
        n_init: int | str = "auto",
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: int | np.random.RandomState | None = None,
        backend: str = "auto",
        assign: str = "exact",
        assign_options: dict | None = None,
        algorithm: str = "auto",
        engine: str = "auto",
        oversampling_factor: float = 2.0,
        init_rounds: int = 5,
        init_sample_size: int | float | None = None,
        persist: bool | None = None,
        batch_size: int = 65_536,
        decay: float = 1.0,
        reassignment_ratio: float = 0.01,
        verbose: int = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.backend = backend
        self.assign = assign
        self.assign_options = assign_options
        self.algorithm = algorithm
        self.engine = engine
        self.oversampling_factor = oversampling_factor
        self.init_rounds = init_rounds
        self.init_sample_size = init_sample_size
        self.persist = persist
        self.batch_size = batch_size
        self.decay = decay
        self.reassignment_ratio = reassignment_ratio
        self.verbose = verbose

    # --- fitting ---------------------------------------------------------------------

    def fit(
        self,
        X: Any,
        y: None = None,
        sample_weight: Any = None,
        *,
        checkpoint: str | os.PathLike | None = None,
    ) -> KMeans:
        """Compute k-means clustering.

        Parameters
        ----------
        X : array-like, dask.array, zarr.Array or str of shape (n_samples, n_features)
            NumPy-like data, a Dask array, a Zarr array (object, path or
            fsspec URL), a pandas or Dask DataFrame of numeric columns, or
            the path of a CSV or Parquet table (:func:`kmeans_dask.read_table`).
        y : None
            Ignored.
        sample_weight : array-like or dask.array of shape (n_samples,), default=None
            Non-negative weight of each row; None gives every row weight 1.
        checkpoint : str or os.PathLike, optional
            File written atomically after every Lloyd iteration. If it
            exists when ``fit`` starts, the fit resumes from it and reaches
            exactly the result of an uninterrupted run; a checkpoint of
            another fit is refused. A scheduler lost mid-fit raises
            ``SchedulerLostError`` saying what the checkpoint holds.

        Returns
        -------
        self : KMeans
            Fitted estimator.

        Raises
        ------
        kmeans_dask.WorkersPausedError
            A ``RuntimeError`` when every worker that could run the fit's work
            stays paused by its memory limit for longer than the dask config
            value ``kmeans_dask.paused-timeout`` (default 60 s), naming the
            workers, their memory and the fixes; the model is left as it was.
        """
        with unchanged_on_error(self), validated_params(self):
            checked, zarr_array = check_input(self, X, reset=True)
            params = self.get_params()
            request = resolve_fit(checked, zarr_array, sample_weight, params, checkpoint)
            outcome = fit_on_cluster(request, self._report)
        best = outcome.result
        warn_if_incomplete(best, self.n_clusters, self.max_iter, self.tol)
        self.cluster_centers_ = best.centers
        # Streamed (out-of-core) fits keep no labels in memory: they are lazy.
        labels = outcome.labels if outcome.labels is not None else self.predict(request.X)
        self.labels_ = _like_input(X, labels)
        self.inertia_ = best.inertia
        self.n_iter_ = best.n_iter
        self.history_ = History(best.history)
        self.cluster_weights_ = best.cluster_weights
        self.n_steps_ = 0
        self.__dict__.pop("_stream", None)
        return self

    # --- streaming -------------------------------------------------------------------

    def partial_fit(self, X: Any, y: None = None, sample_weight: Any = None) -> KMeans:
        """Update the model with one batch of rows (mini-batch k-means).

        The first call initialises the centres on the batch (k-means++ for
        the distributed inits) unless the model is fitted, whose centres and
        weights carry on. Each call moves every centre towards the mean of
        its new rows with rate ``1 / count``, as scikit-learn's
        ``MiniBatchKMeans`` (with ``decay`` and ``reassignment_ratio``).

        Parameters
        ----------
        X : array-like, dask.array or cupy array of shape (n_rows, n_features)
            One batch, brought into the client; a CuPy batch is worked on in
            its GPU's memory, and ``labels_`` stays there.
        y : None
            Ignored.
        sample_weight : array-like of shape (n_rows,), default=None

        Returns
        -------
        self : KMeans
            With ``labels_`` and ``inertia_`` of this batch under the updated
            centres, and ``n_steps_`` counting the batches.

        Raises
        ------
        ValueError
            For an empty batch, another number of features, NaN or infinity,
            or bad weights; the model is then left exactly as it was.
        """
        self._partial_fit(X, sample_weight, first_row=0)
        return self

    def _partial_fit(self, X: Any, sample_weight: Any, first_row: int) -> int:
        """:meth:`partial_fit` on a batch whose first row is row ``first_row`` of its
        stream (as messages name it); returns the batch's number of rows."""
        with unchanged_on_error(self), validated_params(self):
            fitted = hasattr(self, "cluster_centers_")
            batch = local_batch(X)
            if is_device_array(batch):  # worked on where it is (a GPU's memory)
                batch = check_device_batch(self, batch, reset=not fitted)
            else:  # a Zarr batch comes back as a Dask array
                batch = local_batch(check_input(self, batch, reset=not fitted)[0])
            weights = check_sample_weight(as_host_array(sample_weight), batch.shape[0])
            stream = self.__dict__.get("_stream")
            if stream is None and fitted:
                stream = resumed_stream(
                    self.cluster_centers_, getattr(self, "cluster_weights_", None)
                )
            rng = self.__dict__.get("_stream_rng")
            step = stream_step(stream, batch, weights, self.get_params(), rng, first_row)
        self._stream, self._stream_rng = step.stream, step.random_state
        self.cluster_centers_ = step.stream.centers
        self.cluster_weights_ = step.stream.counts
        self.n_steps_ = self.n_iter_ = step.stream.n_batches
        self.labels_ = step.labels
        self.inertia_ = step.inertia
        return batch.shape[0]

    def fit_stream(self, batches: Any, sample_weights: Iterable | None = None) -> KMeans:
        """Learn from a stream of batches with :meth:`partial_fit`.

        Parameters
        ----------
        batches : iterable of arrays, or a Zarr array or path
            The batches in order. A Zarr array (or a path to one) is read
            ``batch_size`` rows at a time, so it may be larger than memory.
        sample_weights : iterable of arrays, optional
            One weight array per batch.

        Returns
        -------
        self : KMeans

        Raises
        ------
        ValueError, TypeError
            For a batch or weights :meth:`partial_fit` refuses (rows named by
            their index in the stream), or not one weight array per batch;
            the model is then left exactly as it was before the stream.
        """
        with unchanged_on_error(self), validated_params(self):
            first_row = 0
            for batch, weights in stream_batches(batches, sample_weights, self.batch_size):
                first_row += self._partial_fit(batch, weights, first_row)
        return self

    # --- model files -----------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model to ``path``, a safetensors file (no pickle in it).

        Labels are not saved (they can be as large as the data and are
        cheap to recompute with :meth:`predict`); read the file back with
        :func:`kmeans_dask.load`.
        """
        check_is_fitted(self)
        save_estimator(self, path)

    def _report(self, message: str) -> None:
        if self.verbose:
            print(f"[kmeans_dask] {message}", flush=True)

    def _check_predict_data(self, X: Any):
        check_is_fitted(self)
        X, _ = check_input(self, X, reset=False)
        if not is_dask_array(X):
            raise_if_nonfinite(X)
        return X

    # --- using the model -------------------------------------------------------------

    def predict(self, X: Any) -> np.ndarray | da.Array:
        """Index of the closest centre for each row of X.

        Parameters
        ----------
        X : array-like, dask.array, DataFrame or str of shape (n_samples, n_features)
            As :meth:`fit` takes it; a DataFrame must have the fitted columns.

        Returns
        -------
        labels : ndarray or dask.array of shape (n_samples,)
            int32; lazy (a Dask array) for Dask input.
        """
        checked = self._check_predict_data(X)
        centers = self.cluster_centers_.astype(checked.dtype)
        return _like_input(X, predict_labels(checked, centers, client_backend(self.backend)))

    def fit_predict(self, X: Any, y: None = None, sample_weight: Any = None):
        """Fit and return ``labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X: Any) -> np.ndarray | da.Array:
        """Euclidean distance of each row to every centre.

        Returns
        -------
        distances : ndarray or dask.array of shape (n_samples, n_clusters)
            Lazy for Dask input. float64 if X or the centres are float64
            (as scikit-learn), else float32.
        """
        checked = self._check_predict_data(X)
        return _like_input(X, center_distances_of(checked, self.cluster_centers_))

    def score(self, X: Any, y: None = None, sample_weight: Any = None) -> float:
        """Opposite of the (weighted) inertia of X under this model.

        Returns
        -------
        score : float
            ``-sum(w * ||x - nearest centre||^2)``; higher is better.
        """
        X = self._check_predict_data(X)
        weights = check_sample_weight(sample_weight, X.shape[0])
        centers = self.cluster_centers_.astype(X.dtype)
        return -weighted_inertia(X, weights, centers, client_backend(self.backend))

    @property
    def _n_features_out(self) -> int:
        """Columns of :meth:`transform`: one per centre, named ``kmeans0``, ``kmeans1``, ..."""
        return self.cluster_centers_.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


def load(path: str | os.PathLike) -> KMeans:
    """Read a model written by :meth:`KMeans.save`.

    The file (safetensors, no pickle) is checked strictly against its
    schema, so a crafted file cannot run code; only declared attributes are set.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    KMeans
        A fitted estimator: ``predict``, ``transform``, ``score`` and
        ``partial_fit`` work; ``labels_`` and ``history_`` are not stored.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If it is not a valid model file of this version (for a 0.1.0
        ``.npz`` file, with the command that converts it).

    Examples
    --------
    >>> import kmeans_dask
    >>> model = kmeans_dask.load("model.safetensors")  # doctest: +SKIP
    """
    return load_estimator(path, KMeans, validate_params)


def _like_input(X: Any, result: Any) -> Any:
    """``result`` computed for a CuPy array ``X`` (its blocks stay on the GPU), else as is."""
    return result.compute() if is_device_array(X) and is_dask_array(result) else result
