"""Command-line options of the benchmark and their parsing."""

from __future__ import annotations

import argparse

OURS = "kmeans_dask"

#: Peers that ``--peers`` accepts (``spark`` is also added by ``--with-spark``).
KNOWN_PEERS = ("faiss", "sklearn", "dask-ml", "spark")

DEFAULT_PEERS = "faiss,sklearn,dask-ml"

DEFAULT_VARIANTS = "lloyd/tasks,lloyd/actors"
#: Rows of the untimed warm-up workload (JIT compilation, imports, pools).
WARMUP_ROWS = 20000


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the benchmark's options to ``parser`` (for ``kmeans-dask bench``).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        Parser or sub-parser to extend.

    Returns
    -------
    argparse.ArgumentParser
        The same parser.
    """
    from kmeans_dask.backends import ALGORITHMS, BACKEND_NAMES, ENGINES

    add = parser.add_argument
    add(
        "--n-samples",
        type=_positive_int,
        default=1_000_000,
        help="rows of generated data",
    )
    add(
        "--n-features",
        type=_positive_int,
        default=32,
        help="columns of generated data",
    )
    add(
        "--n-clusters",
        type=_positive_int,
        default=64,
        help="k, also the number of generated blobs",
    )
    add(
        "--iterations",
        type=_positive_int,
        default=10,
        help="Lloyd iterations every implementation runs, no early stop",
    )
    add(
        "--repeats",
        type=_positive_int,
        default=3,
        help="interleaved repeats: repeat r runs every implementation once, then r+1 ",
    )
    add(
        "--spread",
        type=float,
        default=2.0,
        help="blob centres are uniform in [-spread, spread]^d around unit-variance noise: "
        "2 overlaps (Lloyd keeps moving), 10 separates the clusters",
    )
    add(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="data dtype; faiss is skipped for float64",
    )
    add(
        "--workers",
        type=_positive_int,
        default=1,
        help="LocalCluster worker processes",
    )
    add(
        "--threads-per-worker",
        type=_positive_int,
        default=2,
        help="threads per LocalCluster worker",
    )
    add(
        "--chunk-rows",
        type=int,
        default=0,
        help="rows per Dask chunk; 0 splits as a fit on the NumPy array does: at most "
        "~64 MiB, 16 blocks, fewer (down to 2) where the per-chunk sums would be large",
    )
    add(
        "--backend",
        choices=BACKEND_NAMES,
        default="auto",
        help="kmeans_dask assignment backend",
    )
    add(
        "--algorithm",
        choices=ALGORITHMS,
        default="auto",
        help="kmeans_dask algorithm",
    )
    add(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="kmeans_dask iteration engine",
    )
    add(
        "--variants",
        default=DEFAULT_VARIANTS,
        help="extra kmeans_dask rows as comma-separated ALGORITHM/ENGINE pairs, e.g. "
        "'lloyd/tasks' (plain Lloyd through tasks, what --algorithm/--engine improve on); "
        "'none' for none",
    )
    add(
        "--peers",
        default=DEFAULT_PEERS,
        help=f"comma-separated peers out of {', '.join(KNOWN_PEERS)}; 'none' for none ",
    )
    add(
        "--with-spark",
        action="store_true",
        help="also run Spark MLlib's KMeans via pyspark on local[threads]",
    )
    add(
        "--spark-driver-memory",
        default="4g",
        help="spark.driver.memory for --with-spark",
    )
    add(
        "--seed",
        type=int,
        default=0,
        help="seed of the data and of the initial centres",
    )
    add(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help=f"skip the untimed warm-up round on {WARMUP_ROWS} rows that compiles "
        "kernels and starts pools (default: warm up)",
    )
    add(
        "--json",
        metavar="PATH",
        default=None,
        help="also write the results as JSON to PATH",
    )
    add(
        "--markdown",
        action="store_true",
        help="also print a Markdown block for benchmarks/RESULTS.md",
    )
    return parser


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The benchmark's argument parser.

    Parameters
    ----------
    prog : str, optional
        Program name shown in the usage line.

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Benchmark kmeans_dask against faiss, scikit-learn, dask-ml (and Spark MLlib) "
            "on the same data and initial centres with a fixed iteration count. For "
            "figures, run under `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`."
        ),
    )
    return add_arguments(parser)


def parse_peers(text: str, with_spark: bool) -> list[str]:
    """Peer names from ``--peers`` and ``--with-spark``, in the order given.

    Parameters
    ----------
    text : str
        Comma-separated names, or "none" / "" for no peer.
    with_spark : bool
        Append "spark" if it is not listed.

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        For an unknown name.
    """
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    if names == ["none"]:
        names = []
    peers: list[str] = []
    for name in names:
        name = {"scikit-learn": "sklearn", "dask_ml": "dask-ml", "pyspark": "spark"}.get(
            name, name
        )
        if name not in KNOWN_PEERS:
            raise ValueError(f"unknown peer {name!r}; choose from {', '.join(KNOWN_PEERS)}")
        if name not in peers:
            peers.append(name)
    if with_spark and "spark" not in peers:
        peers.append("spark")
    return peers


def parse_variants(text: str) -> list[tuple[str, str]]:
    """``(algorithm, engine)`` pairs from ``--variants``.

    Parameters
    ----------
    text : str
        Comma-separated ``ALGORITHM/ENGINE`` pairs, or "none" / "".

    Returns
    -------
    list of (str, str)

    Raises
    ------
    ValueError
        For a malformed pair or an unknown algorithm or engine.
    """
    from kmeans_dask.backends import ALGORITHMS, ENGINES

    items = [item.strip() for item in text.split(",") if item.strip()]
    if items == ["none"]:
        return []
    variants = []
    for item in items:
        algorithm, _, engine = item.partition("/")
        if algorithm not in ALGORITHMS or engine not in ENGINES:
            raise ValueError(
                f"variant {item!r} is not ALGORITHM/ENGINE with ALGORITHM in "
                f"{', '.join(ALGORITHMS)} and ENGINE in {', '.join(ENGINES)}"
            )
        variants.append((algorithm, engine))
    return variants


def variant_name(algorithm: str, engine: str) -> str:
    """Row name of a kmeans_dask variant."""
    return f"{OURS}[{algorithm},{engine}]"
