"""Run scikit-learn's own k-means tests against ``kmeans_dask.KMeans``.

The installed ``sklearn/cluster/tests/test_k_means.py`` is copied to a
temporary directory with ``KMeans`` imported from ``kmeans_dask`` instead,
and run by pytest on one in-process LocalCluster. Tests of
``MiniBatchKMeans`` and of scikit-learn's private functions are left out.
Every failure is matched against the differences README.md documents
("Differences from scikit-learn's and dask-ml's KMeans"); the exit status is
1 if any failure is not one of them (or the tests could not run)::

    python scripts/sklearn_suite.py               # prints each failure's reason
    python scripts/sklearn_suite.py -k predict    # pytest's -k, to run a subset
    python scripts/sklearn_suite.py --lloyd-dense # "elkan" as "lloyd", sparse X densified

``--lloyd-dense`` runs the tests that only the refused ``"elkan"`` and
sparse input fail, to show what they would find behind those.

Not a benchmark: a check of behaviour, to see which of scikit-learn's tests
pass and why the others do not.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

#: Tests left out: MiniBatchKMeans only, or scikit-learn's private functions.
LEFT_OUT = (
    r"minibatch|test_euclidean_distance|test_inertia\b|test_kmeans_plusplus|"
    r"test_is_same_clustering|test_relocate_empty_clusters|test_k_means_function"
)

#: (pattern over a failure's "test id - message", the documented difference that fails
#: it), first match wins.
DOCUMENTED = [
    (r"elkan", 'algorithm="elkan" is refused (ours: "hamerly")'),
    (r"sparse|csr|csc", "sparse X is refused"),
    (r"got function|test_wrong_params\[param[24]-", "no callable init"),
    (r"unexpected keyword argument 'copy_x'", "no copy_x: X is never changed"),
    (r"^test_warning_n_init_precomputed_centers", "n_init > 1 with an init array raises"),
    (r"no attribute '_n_init'", "reads the private attribute _n_init"),
    (r"no attribute '_init_centroids'", "calls the private method _init_centroids"),
]

_CONFTEST = f'''
import re

import numpy as np
import pytest

LEFT_OUT = re.compile(r"{LEFT_OUT}")


def pytest_collection_modifyitems(config, items):
    def left_out(item):
        params = getattr(getattr(item, "callspec", None), "params", {{}})
        estimator = params.get("Estimator") or params.get("Klass")
        return LEFT_OUT.search(item.name) or getattr(estimator, "__name__", "") == (
            "MiniBatchKMeans"
        )

    dropped = [item for item in items if left_out(item)]
    config.hook.pytest_deselected(items=dropped)
    items[:] = [item for item in items if not left_out(item)]


@pytest.fixture(scope="session", autouse=True)
def _client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0")
        as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture
def global_random_seed():
    return 42


@pytest.fixture(params=["float32", "float64"])
def global_dtype(request):
    return np.dtype(request.param)
'''


_LLOYD_DENSE = """
import scipy.sparse

from kmeans_dask import KMeans as _KMeans


def _dense(X):
    return X.toarray() if scipy.sparse.issparse(X) else X


class KMeans(_KMeans):
    def fit(self, X, y=None, sample_weight=None):
        if self.algorithm == "elkan":
            self.algorithm = "lloyd"
        return super().fit(_dense(X), y, sample_weight)

    def predict(self, X):
        return super().predict(_dense(X))

    def transform(self, X):
        return super().transform(_dense(X))

    def score(self, X, y=None, sample_weight=None):
        return super().score(_dense(X), y, sample_weight)
"""


def ported_tests(directory: Path, lloyd_dense: bool = False) -> Path:
    """scikit-learn's test_k_means.py with ``KMeans`` from kmeans_dask (or, with
    ``lloyd_dense``, a subclass taking "elkan" as "lloyd" and densifying X), and a conftest."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise SystemExit("scikit-learn is not installed")
    source = Path(spec.origin).parent / "cluster" / "tests" / "test_k_means.py"
    if not source.exists():
        raise SystemExit(f"{source} is not installed (a scikit-learn without its tests)")
    origin = "lloyd_dense" if lloyd_dense else "kmeans_dask"
    text, replaced = re.subn(
        r"^from sklearn\.cluster import KMeans, ",
        f"from {origin} import KMeans\nfrom sklearn.cluster import ",
        source.read_text(),
        count=1,
        flags=re.M,
    )
    if replaced != 1:
        raise SystemExit(f"{source}: its import of KMeans was not found; update this script")
    target = directory / "test_k_means.py"
    target.write_text(text)
    (directory / "conftest.py").write_text(_CONFTEST)
    (directory / "lloyd_dense.py").write_text(_LLOYD_DENSE)
    return target


def reason(failure: str) -> str | None:
    """The documented difference behind ``failure`` ("test id - message"), if any."""
    for pattern, why in DOCUMENTED:
        if re.search(pattern, failure):
            return why
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="select", help="pytest -k expression: run a subset")
    parser.add_argument(
        "--lloyd-dense",
        action="store_true",
        help='take algorithm="elkan" as "lloyd" and densify sparse X',
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        tests = ported_tests(Path(directory), args.lloyd_dense)
        command = [sys.executable, "-m", "pytest", str(tests), "-q", "-rf", "--tb=no"]
        command += ["-p", "no:cacheprovider"]
        if args.select:
            command += ["-k", args.select]
        run = subprocess.run(
            command,
            cwd=directory,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "1000"},
        )
    failed = re.findall(r"^FAILED [^:]+::(.*)$", run.stdout, re.M)
    summary = re.findall(r"^=*\s*(\d+ (?:passed|failed).*?) in [\d.]+s", run.stdout, re.M)
    if run.returncode not in (0, 1) or not summary:
        print(run.stdout[-4000:], run.stderr[-4000:], sep="\n")
        print("sklearn_suite: the tests did not run")
        return 1
    version = _sklearn_version()
    print(f"scikit-learn {version}'s test_k_means.py on kmeans_dask.KMeans: {summary[-1]}")
    reasons = Counter(reason(failure) for failure in failed)
    for why, count in sorted(reasons.items(), key=lambda item: -item[1]):
        if why is not None:
            print(f"  {count:4d} failed: {why}")
    undocumented = [failure for failure in failed if reason(failure) is None]
    for failure in undocumented:
        print(f"  not a documented difference: {failure}")
    return 1 if undocumented else 0


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__


if __name__ == "__main__":
    sys.exit(main())
