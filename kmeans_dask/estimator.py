"""The scikit-learn estimator: a thin layer over the functions of this package.

``KMeans`` validates parameters and data, opens (or finds) a Dask client,
puts the data on the workers once and hands it to the initialisation and
Lloyd functions. Everything it computes lives in those functions.
"""

from __future__ import annotations

import os
import warnings
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
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from kmeans_dask._fit.apply import (
    center_distances_of,
    predict_labels,
    raise_if_nonfinite,
    weighted_inertia,
)
from kmeans_dask._fit.cluster_fit import FitRequest, fit_on_cluster
from kmeans_dask._fit.guards import unchanged_on_error, validated_params
from kmeans_dask._fit.hybrid_init import resolve_sample_size
from kmeans_dask._fit.lloyd import History
from kmeans_dask._fit.searches import client_backend, resolve_searches
from kmeans_dask._fit.seeds import fit_seeds
from kmeans_dask._fit.streaming import StreamState, init_stream_state, minibatch_update
from kmeans_dask._fit.validation import (
    check_init_array,
    check_n_samples,
    validate_params,
)
from kmeans_dask._io.inputs import (
    as_local_array,
    check_dask_array,
    check_input,
    check_sample_weight,
    is_dask_array,
    is_zarr_source,
    open_zarr,
    zarr_as_dask,
)
from kmeans_dask._io.model_files import load_estimator, save_estimator
from kmeans_dask._io.output_paths import check_writable
from kmeans_dask._worker.host_ops import nearest


class KMeans(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator):
    """K-means clustering by a distributed Lloyd loop on Dask.

    Each iteration broadcasts the centres to the workers, assigns every
    worker-resident chunk of rows to its nearest centre (compiled or Faiss search)
    and tree-reduces per-cluster sums, weights and inertia in a fixed order,
    so the result does not depend on the number of workers. With an active
    ``distributed.Client`` the fit runs on that cluster; without one, a
    ``LocalCluster`` is started for the fit (its dashboard link logged, and
    printed with ``verbose``) and closed afterwards.

    Precision: distances are computed in the data's dtype (float32 input
    stays float32; integers and booleans become float64); per-cluster sums,
    weights and inertia are accumulated in float64, and the distance of a
    point to its assigned centre is computed exactly, not by the score
    expansion. ``cluster_centers_`` has the data's dtype.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : {"k-means||", "k-means++", "hybrid", "random"} or array of shape \
(n_clusters, n_features), default="k-means||"
        "k-means||": scalable k-means++ (Bahmani et al.) over the distributed
        data, then weighted k-means++ and Lloyd on its candidates.
        "k-means++": scikit-learn's greedy k-means++ on a uniform sample of
        ``max(10000, 20 * n_clusters)`` rows. "hybrid": exact k-means
        (k-means++ then Lloyd to convergence) on a uniform sample of
        ``init_sample_size`` rows drawn on the workers; its centres start
        the full fit. "random": ``n_clusters`` distinct rows drawn with
        probability proportional to their weight. An array gives the
        initial centres.
    n_init : int, default=1
        Number of initialisations; the run with the lowest final inertia is
        kept. Must be 1 when ``init`` is an array.
    max_iter : int, default=300
        Maximum number of Lloyd iterations per run.
    tol : float, default=1e-4
        Convergence tolerance, defined as in scikit-learn: the run stops when
        the sum over clusters of the squared distance the centres moved in
        an iteration is at most ``tol`` times the mean of the per-feature
        variances of X.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation. Every random draw is keyed on global row
        indices, so a fixed seed gives the same result for any chunking and
        any number of workers.
    backend : {"auto", "numpy", "faiss-cpu", "cupy"}, default="auto"
        Nearest-centroid search: "numpy" (compiled kernels that keep the
        scores in vector registers, BLAS GEMM + compiled argmin for large k*d),
        "faiss-cpu" (``faiss.IndexFlatL2``), "cupy" (the rows on each
        worker's GPU for the whole fit, every pass there; needs the ``gpu``
        extra and GPU workers); "auto" runs CuPy blocks on their GPU and
        everything else with "numpy".
    assign : {"exact", "ivf", "hnsw", "auto"}, default="exact"
        How each Lloyd iteration finds the nearest centre: "exact" searches
        all centres with ``backend``; "ivf" and "hnsw" search a Faiss index
        built over the *centres* each iteration (approximate: a row may get
        a centre that is not its nearest, measured in benchmarks/RESULTS.md);
        "auto" uses IVF only where it measured faster (k >= 4096). The
        k-means|| initialisation, the final pass (``labels_``, ``inertia_``)
        and ``predict`` are always exact. In approximate iterations an
        empty cluster moves onto a row farthest from the centre the
        iteration assigned it (with "exact", its nearest centre).
    assign_options : dict, optional
        Options of the approximate search: ``nlist``, ``nprobe`` for "ivf"
        (defaults ``sqrt(k)`` and 8), ``m``, ``ef_search`` for "hnsw".
    algorithm : {"auto", "lloyd", "hamerly"}, default="auto"
        "hamerly" keeps, next to each worker-resident chunk, per-row bounds
        on the distances to the nearest and the second-nearest centre
        (Hamerly 2010), so rows whose centre provably cannot change skip the
        search; the result is that of "lloyd" (exact nearest centres), at a
        cost of 20 bytes of worker memory per row. "auto" (with the exact
        "numpy" search) runs plain iterations while the centres still move
        by a good share of the gaps between them, where bounds would skip
        almost nothing, and keeps bounds from the first iteration in which
        they settle; "lloyd" searches every row in every iteration. Data
        streamed from Zarr (``persist=False``) always runs "lloyd": there is
        no resident chunk to keep bounds with.
    engine : {"auto", "tasks", "actors"}, default="auto"
        How the passes over the data (the data check, k-means||, the Lloyd
        iterations, the final labelling) reach the workers. "tasks": one
        Dask task per chunk and pass, visible in the dashboard's task stream.
        "actors": one Dask actor per worker for the whole fit, called
        directly by the client, which skips the scheduler's round trip
        (about 15 ms per pass on a small machine; same result bit for bit);
        the passes then show in the workers' panels but not in the task
        stream. "auto" takes
        actors when the per-chunk statistics gathered each iteration stay
        under 64 MiB. Streamed Zarr data through actors is read ahead of
        the work on it (each worker spreads runs of consecutive blocks over
        its threads, with up to 2 blocks per thread read ahead, within a
        sixteenth of its memory limit); its k-means|| rounds run as tasks.
    oversampling_factor : float, default=2.0
        k-means|| draws about ``oversampling_factor * n_clusters`` candidates
        per round.
    init_rounds : int, default=5
        Number of k-means|| sampling rounds (passes over the data).
    init_sample_size : int, float or None, default=None
        Rows sampled by ``init="hybrid"`` (other inits ignore it): an
        integer is a number of rows, a float in (0, 1] a fraction of the
        rows, None ``max(20000, 100 * n_clusters)`` rows; never more than
        the data has, never fewer than ``n_clusters``. The sample is brought
        into the client process.
    persist : bool or None, default=None
        Keep the data in worker memory for the whole fit. None decides from
        the workers' memory limits: data larger than half their total is not
        persisted. False (only for Zarr input) streams the row blocks from
        the store in every pass, so worker memory stays bounded by a few
        blocks per thread.
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
        When > 0, show progress (the initialisation, then every iteration: a
        live bar on a terminal, one line each elsewhere) and the dashboard
        link of a ``LocalCluster`` started for the fit.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Final centres (NumPy, the data's float dtype).
    labels_ : ndarray or dask.array of shape (n_samples,)
        Index of each training row's centre: NumPy for NumPy input, a Dask
        array (held in cluster memory while the fitting client lives) for
        Dask input.
    inertia_ : float
        Weighted sum of squared distances of the training rows to their
        closest final centre (always of the final centres, also when
        ``max_iter`` ends the run).
    n_iter_ : int
        Lloyd iterations run by the kept initialisation.
    history_ : History (a list of IterationRecord)
        Per-iteration inertia, centre shift, relocated empty clusters and
        seconds of the kept run; prints and renders in notebooks as a table,
        ``history_.to_pandas()`` gives a DataFrame.
    cluster_weights_ : ndarray of shape (n_clusters,)
        Total weight assigned to each centre (after :meth:`partial_fit`: the
        accumulated, possibly decayed, counts of the stream).
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
        n_init: int = 1,
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
            Training data: NumPy-like (lists, DataFrames), a Dask array with
            any row chunking (columns are rechunked to one block), a Zarr
            array given as an object, a path or an fsspec URL (its row chunks
            become the Dask chunks), a pandas or Dask DataFrame of numeric
            columns (a text column is refused by name), or the path of a CSV
            or Parquet table (see :func:`kmeans_dask.read_table`).
        y : None
            Ignored.
        sample_weight : array-like or dask.array of shape (n_samples,), default=None
            Non-negative weight of each row; None gives every row weight 1.
        checkpoint : str or os.PathLike, optional
            File to which the fit's state is written atomically after every
            Lloyd iteration. If it exists when ``fit`` starts (the same fit
            was killed, e.g. at walltime), the fit resumes from it and
            reaches exactly the result of an uninterrupted run. A checkpoint
            of a different fit (other parameters, seed or data) is refused;
            with ``random_state=None`` the rerun takes the seeds stored in the
            checkpoint. A path that cannot be written is refused before any
            work, and a scheduler lost mid-fit raises ``SchedulerLostError``
            (a ``ConnectionError``) saying what the checkpoint holds.

        Returns
        -------
        self : KMeans
            Fitted estimator.
        """
        with unchanged_on_error(self), validated_params(self):
            request = self._fit_request(X, sample_weight, checkpoint)
            outcome = fit_on_cluster(request, self._report)
        best = outcome.result
        if not best.converged:
            warnings.warn(
                f"KMeans stopped at max_iter={self.max_iter} before converging: in the last "
                f"iteration the centres moved more than tol={self.tol} (times the data's mean "
                "variance) allows. Increase max_iter or tol; verbose=1 shows the shifts.",
                ConvergenceWarning,
                stacklevel=2,
            )
        if best.n_nonempty < self.n_clusters:
            warnings.warn(
                f"Number of distinct clusters ({best.n_nonempty}) found smaller than "
                f"n_clusters ({self.n_clusters}). Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.cluster_centers_ = best.centers
        # Streamed (out-of-core) fits keep no labels in memory: they are lazy.
        self.labels_ = outcome.labels if outcome.labels is not None else self.predict(request.X)
        self.inertia_ = best.inertia
        self.n_iter_ = best.n_iter
        self.history_ = History(best.history)
        self.cluster_weights_ = best.cluster_weights
        self.n_steps_ = 0
        self.__dict__.pop("_stream", None)
        return self

    def _fit_request(self, X: Any, sample_weight: Any, checkpoint: Any) -> FitRequest:
        """Everything :func:`fit_on_cluster` needs, checked before any work."""
        X, zarr_array = check_input(self, X, reset=True)
        n_samples, n_features = X.shape
        check_n_samples(n_samples, self.n_clusters)
        if _is_name(self.init, "hybrid"):
            resolve_sample_size(self.init_sample_size, n_samples, self.n_clusters)
        init_centers = None
        if not isinstance(self.init, str):
            init_centers = check_init_array(self.init, self.n_clusters, n_features, X.dtype)
        params = self.get_params()
        searches = resolve_searches(params, n_features)
        if checkpoint is not None:
            check_writable(checkpoint, "checkpoint")
        return FitRequest(
            X=X,
            zarr_array=zarr_array,
            weights=check_sample_weight(sample_weight, n_samples),
            params=params,
            init_centers=init_centers,
            seeds=fit_seeds(self.random_state, self.n_init, checkpoint),
            backend=searches.backend,
            search=searches.search,
            bounds=searches.bounds,
            checkpoint=checkpoint,
        )

    # --- streaming -------------------------------------------------------------------

    def partial_fit(self, X: Any, y: None = None, sample_weight: Any = None) -> KMeans:
        """Update the model with one batch of rows (mini-batch k-means).

        The first call initialises the centres on the batch (k-means++ for
        ``init="k-means||"``, ``"k-means++"`` or ``"hybrid"``, weighted random rows for
        ``"random"``, or the ``init`` array) unless the model was already
        fitted, whose centres and ``cluster_weights_`` are then carried on.
        Each call assigns the batch to the nearest centres and moves each
        centre towards the mean of its new rows with learning rate
        ``1 / count`` (Sculley's mini-batch k-means, as scikit-learn's
        ``MiniBatchKMeans``), optionally forgetting old batches (``decay``)
        and reassigning dying centres (``reassignment_ratio``). See
        :mod:`kmeans_dask._fit.streaming` for the exact rule.

        Parameters
        ----------
        X : array-like, dask.array or cupy array of shape (n_rows, n_features)
            One batch; it is brought into client memory.
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
            For an empty batch, a batch with another number of features than
            the model, NaN or infinity, or bad weights. The model is then
            left exactly as it was.
        """
        self._partial_fit(X, sample_weight, first_row=0)
        return self

    def _partial_fit(self, X: Any, sample_weight: Any, first_row: int) -> int:
        """:meth:`partial_fit` on a batch whose first row is row ``first_row`` of its
        stream (as messages name it); returns the batch's number of rows."""
        with unchanged_on_error(self), validated_params(self):
            fitted = hasattr(self, "cluster_centers_")
            batch, _ = check_input(self, as_local_array(X), reset=not fitted)
            batch = as_local_array(batch)  # a Zarr batch comes back as a Dask array
            weights = check_sample_weight(as_local_array(sample_weight), batch.shape[0])
            backend = resolve_searches(self.get_params(), batch.shape[1]).backend
            stream = self.__dict__.get("_stream")
            if stream is None and fitted:
                counts = getattr(self, "cluster_weights_", np.zeros(self.n_clusters))
                centers = self.cluster_centers_
                stream = StreamState(centers, counts, n_seen=float(counts.sum()))
            if stream is None:
                rng = check_random_state(self.random_state)
                stream, _ = init_stream_state(
                    batch,
                    weights,
                    self.n_clusters,
                    random_state=rng,
                    init="k-means++"
                    if _is_name(self.init, ("k-means||", "hybrid"))
                    else self.init,
                    backend=backend,
                    first_row=first_row,
                )
            else:
                rng = self.__dict__.get("_stream_rng") or check_random_state(self.random_state)
                stream, _ = minibatch_update(
                    stream,
                    batch,
                    weights,
                    decay=self.decay,
                    reassignment_ratio=self.reassignment_ratio,
                    random_state=rng,
                    backend=backend,
                    first_row=first_row,
                )
        labels, sq_dist = nearest(batch, stream.centers.astype(batch.dtype), backend)
        self._stream, self._stream_rng = stream, rng
        self.cluster_centers_ = stream.centers
        self.cluster_weights_ = stream.counts
        self.n_steps_ = self.n_iter_ = stream.n_batches
        self.labels_ = labels
        self.inertia_ = float(sq_dist.sum() if weights is None else np.dot(weights, sq_dist))
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
            For a batch or weights :meth:`partial_fit` refuses (a row is
            named by its index in the whole stream), or a number of weight
            arrays other than of batches. The model is then left exactly as
            it was before the stream: the batches before the refused one are
            undone.
        """
        with unchanged_on_error(self), validated_params(self):
            if is_zarr_source(batches):
                array = open_zarr(batches)
                check_dask_array(zarr_as_dask(array))  # shape and dtype before any batch
                batches = (
                    array[start : start + self.batch_size]
                    for start in range(0, array.shape[0], self.batch_size)
                )
            weights = None if sample_weights is None else iter(sample_weights)
            first_row = 0
            for position, batch in enumerate(batches):
                weight = None if weights is None else next(weights, _MISSING)
                if weight is _MISSING:
                    raise ValueError(
                        f"sample_weights gave {position} arrays but batches more; give one "
                        "weight array per batch"
                    )
                first_row += self._partial_fit(batch, weight, first_row)
            if weights is not None and next(weights, _MISSING) is not _MISSING:
                raise ValueError(
                    "sample_weights gave more arrays than batches; give one weight array per batch"
                )
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
        X = self._check_predict_data(X)
        centers = self.cluster_centers_.astype(X.dtype)
        return predict_labels(X, centers, client_backend(self.backend))

    def fit_predict(self, X: Any, y: None = None, sample_weight: Any = None):
        """Fit and return ``labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X: Any) -> np.ndarray | da.Array:
        """Euclidean distance of each row to every centre.

        Returns
        -------
        distances : ndarray or dask.array of shape (n_samples, n_clusters)
            Lazy for Dask input.
        """
        X = self._check_predict_data(X)
        return center_distances_of(X, self.cluster_centers_.astype(X.dtype))

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


#: Marks an exhausted iterator.
def load(path: str | os.PathLike) -> KMeans:
    """Read a model written by :meth:`KMeans.save`.

    The file (safetensors, no pickle) is checked strictly against its schema
    (format, version, tensors, shapes, dtypes, values, the parameters as
    ``fit`` checks them), so a crafted file cannot run code, and only the
    declared attributes are set.

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
        If the file is not a valid model file of this version (a
        kmeans_dask 0.1.0 ``.npz`` file is named, with the command that
        converts it); the message names the file and the problem.

    Examples
    --------
    >>> import kmeans_dask
    >>> model = kmeans_dask.load("model.safetensors")  # doctest: +SKIP
    """
    return load_estimator(path, KMeans, validate_params)


_MISSING = object()


def _is_name(init: Any, names: str | tuple[str, ...]) -> bool:
    """``init`` is the name ``names`` (or one of the names ``names``), not an array."""
    return isinstance(init, str) and init in ((names,) if isinstance(names, str) else names)
