"""Benchmark kmeans_dask against its peers on the same data and initial centres.

Every implementation clusters the same deterministic float32 blobs, starts
from the same ``k`` randomly chosen rows and runs a fixed number of Lloyd
iterations with no early stop. Runs are interleaved: repeat ``r`` runs every
implementation once (in an order rotated by ``r``, and reversed in odd
repeats, so that no implementation always follows the same one) before
repeat ``r + 1`` starts, so slow drifts of the machine hit every
implementation alike; each run waits for the machine to be idle first
(:func:`wait_until_idle`). The machine's SGEMM throughput is measured in
the same slots.

Peers:

* ``faiss``: ``faiss.Kmeans`` with subsampling disabled
  (``max_points_per_centroid = n``), in this process with all cores.
* ``sklearn``: ``sklearn.cluster.KMeans(algorithm="lloyd")``, in this process.
* ``dask-ml``: ``dask_ml.cluster.KMeans`` on the same ``LocalCluster`` and the
  same persisted Dask array as kmeans_dask.
* ``spark`` (``--with-spark``): ``pyspark.mllib.clustering.KMeans.train`` with
  ``initialModel`` on ``local[T]``, T the LocalCluster's thread count.

Seconds per iteration come from each implementation's own per-iteration
timing where it has one (kmeans_dask ``history_``, faiss ``iteration_stats``,
dask-ml's "Lloyd loop" log timers); scikit-learn and Spark have none, so
theirs is the difference between a fit of ``iterations`` and a fit of one
iteration, divided by ``iterations - 1``, which removes the per-fit costs
(input checks and copies, the final labelling pass, Spark's Python-to-JVM
transfer). The whole fit's wall time per iteration is reported as well. The
final inertia of every implementation is recomputed here the same way, in
float64, from its final centres.

Modules: :mod:`~kmeans_dask.benchmark.options` (the command line),
:mod:`~kmeans_dask.benchmark.data` (blobs, initial centres, exact inertia),
:mod:`~kmeans_dask.benchmark.schedule` (run order, idle wait),
:mod:`~kmeans_dask.benchmark.machine` (SGEMM throughput, environment),
:mod:`~kmeans_dask.benchmark.runs` (one timed fit per implementation),
:mod:`~kmeans_dask.benchmark.overhead` (the Dask part of an iteration),
:mod:`~kmeans_dask.benchmark.summary` (ratios and tables) and
:mod:`~kmeans_dask.benchmark.driver` (the whole run).

Run with ``python scripts/bench.py --help`` (or ``kmeans-dask bench``). For
figures to publish, run ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python
scripts/bench.py ...`` so OpenBLAS picks its kernels for the real CPU.
"""

from kmeans_dask.benchmark.driver import main, run
from kmeans_dask.benchmark.options import add_arguments, build_parser

__all__ = ["add_arguments", "build_parser", "main", "run"]
