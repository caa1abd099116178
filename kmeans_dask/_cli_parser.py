"""The argument parser of ``kmeans-dask``: subcommands, option types, help text.

``fit`` offers every :class:`~kmeans_dask.KMeans` parameter as an option
whose default is read from the estimator's signature, so the two cannot
drift apart. Refused arguments end the command with one line (``kmeans-dask
fit: error: ...``) and exit status 2.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

#: Exit status for input the command refuses (bad arguments, bad data).
EXIT_BAD_INPUT = 2

#: What commands that read data take.
INPUT_HELP = (
    "Zarr array path/URL, .npy file, or CSV/Parquet table (file, directory of parts, glob)"
)

#: The CLI's spelling of ``persist``: None, True, False.
PERSIST_CHOICES = {"auto": None, "yes": True, "no": False}


class ArgumentsRefused(Exception):
    """Command-line arguments the parser refused; the message is the one line to print."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the command and the problem."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentsRefused(f"{self.prog}: error: {message} (see {self.prog} --help)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` once, and only where there is a default to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.required
            or action.default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return text + " (default: %(default)s)"


def _type(convert: Callable[[str], Any], check: Callable[[Any], bool], expected: str):
    """An argparse type: ``convert`` the text, refuse it unless ``check`` holds."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = expected  # argparse names the type in some messages
    return parse


positive_int = _type(int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _type(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _type(float, lambda v: 0 < v < float("inf"), "a finite number > 0")
non_negative_float = _type(float, lambda v: 0 <= v < float("inf"), "a finite number >= 0")


def _seed(text: str) -> int:
    value = _type(int, lambda v: 0 <= v < 2**32, "an integer in [0, 2**32 - 1]")(text)
    return int(value)


def _n_init(text: str) -> int | str:
    """``--n-init``: a number of runs (integer >= 1) or "auto" (10 for random rows, else 1)."""
    if text == "auto":
        return text
    return _type(int, lambda v: v >= 1, "'auto' or an integer >= 1")(text)


def _sample_size(text: str) -> int | float:
    """``--init-sample-size``: a number of rows (integer >= 1) or a fraction in (0, 1]."""
    expected = "a number of rows (an integer >= 1) or a fraction of the rows in (0, 1]"
    if text.strip().isdigit():
        return _type(int, lambda v: v >= 1, expected)(text)
    return _type(float, lambda v: 0 < v <= 1, expected)(text)


def _init(text: str) -> str:
    """An initialisation method, or a ``.npy`` file of initial centres."""
    from kmeans_dask._fit.validation import INIT_METHODS

    if text in INIT_METHODS or text.endswith(".npy"):
        return text
    raise argparse.ArgumentTypeError(
        f"expected one of {', '.join(INIT_METHODS)} or a .npy file of centres, got {text!r}"
    )


def _mapping(text: str) -> dict[str, Any]:
    """``nprobe=8,nlist=64`` or a YAML/JSON mapping such as ``{"nprobe": 8}``."""
    import yaml

    try:
        if text.strip().startswith("{"):
            value = yaml.safe_load(text)
        else:
            value = {}
            for item in filter(None, (part.strip() for part in text.split(","))):
                key, sep, raw = item.partition("=")
                if not sep or not key.strip():
                    raise ValueError(item)
                value[key.strip()] = yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError):
        value = None
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE[,KEY=VALUE...] or a mapping such as '{{nprobe: 8}}', got {text!r}"
        )
    return value


def _ks(text: str) -> list[int]:
    """``--ks 2,4,8,16`` -> [2, 4, 8, 16]."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 2,4,8,16, got {text!r}"
        ) from None


def _columns(text: str) -> list[str]:
    """``--columns age,income`` -> ["age", "income"]."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated column names, got {text!r}")
    return names


def _n_clusters_or_auto(text: str) -> int | str:
    """``-k auto`` or a number of segments >= 1."""
    if text == "auto":
        return text
    return _type(int, lambda v: v >= 1, "an integer >= 1 or 'auto'")(text)


def _columns_option(parser: argparse.ArgumentParser, what: str = "to cluster on") -> None:
    parser.add_argument(
        "--columns",
        type=_columns,
        metavar="NAME,...",
        help=f"columns of a CSV or Parquet input {what} (default: all)",
    )


def estimator_defaults() -> dict[str, Any]:
    """The defaults of :class:`~kmeans_dask.KMeans`'s parameters, from its signature."""
    from kmeans_dask import KMeans

    return {
        name: parameter.default
        for name, parameter in inspect.signature(KMeans.__init__).parameters.items()
        if name != "self"
    }


def _estimator_options(parser: argparse.ArgumentParser) -> None:
    """One option per KMeans parameter (``verbose`` is --quiet/--json), defaults read from it."""
    from kmeans_dask.backends import ALGORITHMS, ASSIGN_MODES, BACKEND_NAMES, ENGINES

    defaults = estimator_defaults()
    persist = {value: name for name, value in PERSIST_CHOICES.items()}[defaults["persist"]]
    model = parser.add_argument_group("model (the KMeans parameters)")
    add = model.add_argument
    add("-k", "--n-clusters", type=positive_int, help="number of clusters")
    add(
        "--init",
        type=_init,
        help="k-means||, k-means++, hybrid, random, or a .npy file of centres",
    )
    add(
        "--n-init",
        type=_n_init,
        help="initialisations; the lowest inertia is kept ('auto': 10 for random, else 1)",
    )
    add("--max-iter", type=positive_int, help="Lloyd iterations per run")
    add("--tol", type=non_negative_float, help="relative tolerance (scikit-learn's)")
    add("--random-state", type=_seed, help="seed of every random draw (default: random)")
    add("--backend", choices=BACKEND_NAMES, help="nearest-centre search")
    add("--assign", choices=ASSIGN_MODES, help="exact search, or approximate for large k")
    add(
        "--assign-options",
        type=_mapping,
        metavar="KEY=VALUE,...",
        help=(
            "options of the approximate search, e.g. nprobe=8 (ivf) or ef_search=64 (hnsw); "
            "exact_final=true for exact labels (one more exact pass)"
        ),
    )
    add(
        "--algorithm",
        choices=ALGORITHMS,
        help="'hamerly' skips rows whose centre cannot change; 'lloyd' searches every row",
    )
    add(
        "--engine",
        choices=ENGINES,
        help="passes over the data through per-worker actors (low latency) or tasks",
    )
    add("--oversampling-factor", type=positive_float, help="k-means|| candidates per round / k")
    add("--init-rounds", type=positive_int, help="k-means|| sampling rounds")
    add(
        "--init-sample-size",
        type=_sample_size,
        help="rows (integer) or fraction of rows (float) of the hybrid init's sample "
        "(default: max(20000, 100 k) rows)",
    )
    add(
        "--persist",
        choices=tuple(PERSIST_CHOICES),
        help="keep the data in worker memory; 'no' streams it from Zarr every pass",
    )
    stream = parser.add_argument_group("streaming (stored in the model for partial_fit)")
    stream.add_argument("--batch-size", type=positive_int, help="rows per fit_stream batch")
    stream.add_argument(
        "--decay", type=_type(float, lambda v: 0 < v <= 1, "a number in (0, 1]"), help="forgetting"
    )
    stream.add_argument(
        "--reassignment-ratio", type=non_negative_float, help="reassign centres below this share"
    )
    defaults["persist"] = persist
    del defaults["verbose"]  # --quiet and --json
    parser.set_defaults(**defaults)


def _cluster_options(parser: argparse.ArgumentParser, workers: int, threads: int) -> None:
    group = parser.add_argument_group("cluster")
    where = group.add_mutually_exclusive_group()
    where.add_argument(
        "--cluster", help="cluster spec YAML (cluster_specs/: local, slurm, pbs...)"
    )
    where.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:port)")
    group.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the --cluster spec (cores, memory, jobs, walltime, ...); repeat",
    )
    group.add_argument(
        "--timeout",
        type=positive_float,
        default=10.0,
        help="seconds to wait for --scheduler to answer, or for --cluster workers to start",
    )
    group.add_argument(
        "--workers", type=positive_int, default=workers, help="LocalCluster workers"
    )
    group.add_argument(
        "--threads-per-worker",
        type=positive_int,
        default=threads,
        help="threads per LocalCluster worker",
    )


def build_parser(commands_run: dict[str, Callable[[argparse.Namespace], int]]):
    """The parser of ``kmeans-dask``; ``commands_run`` maps each subcommand to its function."""
    from kmeans_dask import benchmark
    from kmeans_dask._fit.validation import INIT_METHODS
    from kmeans_dask._version import __version__

    formatter = _HelpFormatter
    parser = _Parser(
        prog="kmeans-dask", description="Scalable k-means on Dask.", formatter_class=formatter
    )
    parser.add_argument("--version", action="version", version=f"kmeans-dask {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, formatter_class=formatter)
        sub.set_defaults(run=commands_run[name])
        return sub

    fit = command("fit", "fit a model on a Zarr array or .npy file")
    fit.add_argument(
        "input",
        help=INPUT_HELP,
    )
    _columns_option(fit)
    _estimator_options(fit)
    fit.add_argument("--checkpoint", help="checkpoint file: written every iteration, resumed from")
    fit.add_argument(
        "-o", "--output", help="write the model to this file (safetensors, e.g. model.safetensors)"
    )
    fit.add_argument("--json", action="store_true", help="print a JSON summary only")
    fit.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    _cluster_options(fit, workers=1, threads=2)

    predict = command("predict", "label the rows of an input with a saved model")
    predict.add_argument(
        "model", help="model file written by `fit --output`, or `segment --save-pipeline`"
    )
    predict.add_argument(
        "input",
        help=INPUT_HELP,
    )
    _columns_option(predict, "the model was fitted on")
    predict.add_argument(
        "-o",
        "--output",
        help="labels file, .zarr or .npy (default: <input>.labels.zarr next to the input); for "
        "a table input .csv or .parquet: the table with a `segment` column",
    )
    predict.add_argument("--overwrite", action="store_true", help="replace an existing output")
    predict.add_argument("--json", action="store_true", help="print a JSON summary only")
    _cluster_options(predict, workers=1, threads=2)

    make_data = command("make-data", "write synthetic blobs to a Zarr array, chunk by chunk")
    make_data.add_argument("output", help="Zarr array path to create")
    make_data.add_argument("-n", "--n-samples", type=positive_int, default=1_000_000, help="rows")
    make_data.add_argument("-d", "--n-features", type=positive_int, default=32, help="columns")
    make_data.add_argument("-k", "--n-clusters", type=positive_int, default=64, help="blobs")
    make_data.add_argument(
        "--chunk-rows", type=positive_int, default=250_000, help="rows per Zarr chunk"
    )
    make_data.add_argument(
        "--cluster-std", type=non_negative_float, default=1.0, help="blob standard deviation"
    )
    make_data.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    make_data.add_argument("--seed", type=_seed, default=0, help="random seed")
    make_data.add_argument("--overwrite", action="store_true", help="replace an existing array")

    tune = command("tune", "measure exact vs approximate assignment on a sample, recommend one")
    tune.add_argument(
        "input",
        help=INPUT_HELP,
    )
    _columns_option(tune)
    tune.add_argument(
        "-k", "--n-clusters", type=positive_int, required=True, help="number of clusters"
    )
    tune.add_argument("--sample", type=positive_int, default=100_000, help="rows to sample")
    tune.add_argument(
        "--iterations", type=positive_int, default=5, help="Lloyd iterations per setting"
    )
    tune.add_argument(
        "--max-gap",
        type=non_negative_float,
        default=0.001,
        help="largest acceptable relative inertia gap",
    )
    tune.add_argument("--seed", type=_seed, default=0, help="random seed")
    tune.add_argument("--json", action="store_true", help="print JSON")

    elbow = command(
        "elbow",
        "fit several k on the same data, score each (elbow, silhouette, Calinski-Harabasz, "
        "Davies-Bouldin) and suggest one",
    )
    elbow.add_argument("input", help=INPUT_HELP)
    _columns_option(elbow)
    elbow.add_argument(
        "--ks", type=_ks, default=[2, 4, 8, 16, 32], help="comma-separated k to fit"
    )
    elbow.add_argument("--png", help="write the plot of every criterion against k to this PNG")
    elbow.add_argument(
        "--silhouette-sample",
        type=_type(int, lambda v: v >= 2, "an integer >= 2"),
        default=10_000,
        help="rows in the silhouette's seeded sample",
    )
    elbow.add_argument(
        "--scale",
        default="log",
        choices=("log", "linear"),
        help="inertia scale on which the elbow is sought",
    )
    elbow.add_argument("--init", default="k-means||", choices=INIT_METHODS, help="init")
    elbow.add_argument(
        "--init-sample-size",
        type=_sample_size,
        help="rows or fraction of rows of the hybrid init's sample (default: max(20000, 100 k))",
    )
    elbow.add_argument(
        "--max-iter", type=positive_int, default=300, help="Lloyd iterations per fit"
    )
    elbow.add_argument("--random-state", type=_seed, default=0, help="seed of every fit")
    elbow.add_argument("--json", action="store_true", help="print JSON only")
    _cluster_options(elbow, workers=1, threads=2)

    _segment_parser(command("segment", "segment the rows of a table: the whole pipeline"))

    info = command("info", "show a saved model")
    info.add_argument("model", help="model file")
    info.add_argument("--json", action="store_true", help="print JSON")

    convert = command(
        "convert", "rewrite a kmeans_dask 0.1.0 .npz model file as a .safetensors one"
    )
    convert.add_argument("model", help="the 0.1.0 .npz model file (left as it is)")
    convert.add_argument("output", help="the model file to write, e.g. model.safetensors")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output")

    compile_ = command(
        "compile", "compile the kernels of a fit ahead, into Numba's cache (NUMBA_CACHE_DIR)"
    )
    compile_.add_argument(
        "--dtype",
        nargs="+",
        default=["float32", "float64"],
        choices=("float32", "float64"),
        help="the dtypes the fits compute in",
    )
    compile_.add_argument(
        "-k",
        "--n-clusters",
        type=positive_int,
        default=256,
        help="clusters of the fits (the kernels differ below 64 and for large k x d)",
    )
    compile_.add_argument("-d", "--n-features", type=positive_int, default=32, help="columns")
    compile_.add_argument("--weighted", action="store_true", help="fits with sample_weight")
    compile_.add_argument(
        "--processes",
        type=positive_int,
        default=min(4, os.cpu_count() or 1),
        help="processes compiling in parallel",
    )

    demo = command("demo", "fit generated blobs on a LocalCluster, printing progress and results")
    demo.add_argument("--n-samples", type=positive_int, default=1_000_000, help="rows to generate")
    demo.add_argument("--n-features", type=positive_int, default=16, help="columns")
    demo.add_argument("--n-clusters", "-k", type=positive_int, default=32, help="clusters")
    demo.add_argument(
        "--cluster-std", type=non_negative_float, default=5.0, help="blob standard deviation"
    )
    demo.add_argument("--seed", type=_seed, default=0, help="random seed")
    _cluster_options(demo, workers=1, threads=2)

    bench = command("bench", "benchmark against faiss, scikit-learn, dask-ml (and Spark)")
    benchmark.add_arguments(bench)
    return parser


def _segment_parser(segment: argparse.ArgumentParser) -> None:
    from kmeans_dask.preprocessing import IMPUTE_STRATEGIES, SCALE_METHODS

    segment.add_argument(
        "input", help="CSV or Parquet table: a file, a directory of part files, or a glob"
    )
    segment.add_argument(
        "-k",
        "--n-clusters",
        type=_n_clusters_or_auto,
        default="auto",
        help="number of segments, or 'auto': the elbow over --ks",
    )
    segment.add_argument(
        "-o",
        "--output",
        required=True,
        help="the table with a `segment` column: .csv (a file) or .parquet (a directory of parts)",
    )
    segment.add_argument("--summary", help="write the per-segment summary to this .csv or .md")
    segment.add_argument("--plot", help="write a plot of the segments' profiles to this PNG")
    segment.add_argument(
        "--save-pipeline", help="write the fitted pipeline to this file (for `predict`)"
    )
    _columns_option(segment, "to segment on; the output keeps every column")
    segment.add_argument(
        "--ks", type=_ks, default=list(range(2, 11)), help="the k tried by -k auto"
    )
    segment.add_argument(
        "--impute",
        choices=[s for s in IMPUTE_STRATEGIES if s != "drop"],
        default="median",
        help="fill missing values with the column's mean, median or --fill-value",
    )
    segment.add_argument(
        "--fill-value", type=float, default=0.0, help="the value of --impute constant"
    )
    segment.add_argument(
        "--scale", choices=(*SCALE_METHODS, "none"), default="standard", help="scaling"
    )
    segment.add_argument(
        "--outlier-z",
        type=non_negative_float,
        default=3.0,
        help="leave rows with |z| above this in any column out of the fit (0: keep all)",
    )
    segment.add_argument(
        "--max-categories",
        type=positive_int,
        default=20,
        help="one-hot encode text columns with at most this many values; refuse others",
    )
    segment.add_argument(
        "--pca", type=positive_int, help="cluster on this many principal components"
    )
    segment.add_argument("--random-state", type=_seed, default=0, help="seed of every fit")
    segment.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    segment.add_argument("--json", action="store_true", help="print a JSON summary only")
    segment.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    _cluster_options(segment, workers=1, threads=2)


def print_error(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
