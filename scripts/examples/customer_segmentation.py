"""Customer segmentation: k-means on a standardised customer table.

Use case
--------
A marketing team wants a handful of customer segments from a table of
customers (age, income, visits per month, monthly spend, tenure). The
features live on very different scales (income in tens of thousands, visits
in single digits), so they are standardised first
(``dask_ml.preprocessing.StandardScaler``), then ``kmeans_dask.KMeans(5)``
groups the customers, and the segments are described in the original units:
count, share and the mean of every feature, one row per segment, sorted by
mean age.

The table is synthetic and deterministic (``--seed``): a ``dask.dataframe``
whose partitions are generated on the workers from five latent segments
(students, young professionals, families, affluent, retirees), so it can be
made as large as the cluster allows (``--n-customers``). Because the true
segments are known, the script also prints the adjusted Rand index between
them and the k-means segments (1.0 = the same partition).

The summary is printed as a table and written to
``<output-dir>/customer_segments.csv``.

Run it
------
::

    pip install -e .                 # dask-ml (the StandardScaler) is in the base install
    python scripts/examples/customer_segmentation.py                # 1,000,000 customers
    python scripts/examples/customer_segmentation.py --small        # 20,000 customers
    python scripts/examples/customer_segmentation.py --n-customers 5000000 --output-dir out

A two-worker ``LocalCluster`` (``cluster_specs/local.yaml``) is started; its
dashboard link is printed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
LOCAL_SPEC = ROOT / "cluster_specs" / "local.yaml"
FEATURES = ["age", "income", "visits_per_month", "spend", "tenure_years"]
N_SEGMENTS = 5

# The latent segments: share of customers, then (mean, standard deviation) per feature.
LATENT = {
    "students": (0.20, [(22, 2.5), (18_000, 5_000), (11, 2.5), (60, 20), (1, 0.7)]),
    "young professionals": (0.25, [(29, 3), (52_000, 8_000), (6, 1.5), (200, 40), (2.5, 1)]),
    "families": (0.25, [(45, 5), (80_000, 10_000), (3, 1), (420, 60), (10, 3)]),
    "affluent": (0.10, [(55, 6), (160_000, 25_000), (2, 1), (800, 120), (14, 4)]),
    "retirees": (0.20, [(72, 5), (30_000, 7_000), (8, 1.5), (150, 40), (25, 6)]),
}


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall-clock seconds of the block under ``name``."""
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Segment a synthetic customer table with kmeans_dask.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--n-customers", type=int, default=None, help="default 1,000,000 (20,000 with --small)"
    )
    parser.add_argument("--partitions", type=int, default=None, help="default 8 (4 with --small)")
    parser.add_argument("--small", action="store_true", help="a small table, for a quick run")
    parser.add_argument("--output-dir", type=Path, default=Path("example-output"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    return parser.parse_args(argv)


def make_partition(index: int, n_rows: int, seed: int) -> pd.DataFrame:
    """One partition of the customer table, from (seed, partition index) only."""
    rng = np.random.default_rng([seed, index])
    shares = np.array([share for share, _ in LATENT.values()])
    segment = rng.choice(len(LATENT), size=n_rows, p=shares / shares.sum())
    params = np.array([stats for _, stats in LATENT.values()], dtype=np.float64)  # (5, 5, 2)
    means, stds = params[segment, :, 0], params[segment, :, 1]
    values = means + stds * rng.standard_normal((n_rows, len(FEATURES)))
    table = pd.DataFrame(values, columns=FEATURES)
    table["age"] = table["age"].clip(18, 95).round()
    table["income"] = table["income"].clip(lower=0).round(-2)
    table["visits_per_month"] = table["visits_per_month"].clip(lower=0).round(1)
    table["spend"] = table["spend"].clip(lower=0).round(2)
    table["tenure_years"] = np.minimum(table["tenure_years"].clip(lower=0), table["age"] - 18)
    table["latent_segment"] = segment.astype(np.int64)
    return table


def customer_table(n_customers: int, n_partitions: int, seed: int) -> dd.DataFrame:
    """A lazy dask.dataframe of customers; each partition is generated where it is computed."""
    sizes = np.diff(np.linspace(0, n_customers, n_partitions + 1).astype(int))
    meta = make_partition(0, 0, seed)
    return dd.from_map(
        make_partition, range(n_partitions), sizes.tolist(), [seed] * n_partitions, meta=meta
    )


def print_summary(summary: pd.DataFrame) -> None:
    """The summary as a rich table (plain text when rich is not installed)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(summary.to_string(float_format=lambda v: f"{v:,.2f}"))
        return
    table = Table(title="customer segments (means in original units)")
    for column in summary.columns:
        table.add_column(column, justify="right")
    for _, row in summary.iterrows():
        table.add_row(
            f"{int(row['segment'])}",
            f"{int(row['count']):,}",
            f"{row['share']:.1%}",
            *(f"{row[name]:,.1f}" for name in FEATURES),
        )
    Console(width=120).print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from dask_ml.preprocessing import StandardScaler
    from sklearn.metrics import adjusted_rand_score

    from kmeans_dask import KMeans
    from kmeans_dask.clusters import from_spec

    n_customers = args.n_customers or (20_000 if args.small else 1_000_000)
    n_partitions = args.partitions or (4 if args.small else 8)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    with from_spec(LOCAL_SPEC, n_workers=args.workers, dashboard_address="127.0.0.1:0") as client:
        timings["cluster start"] = time.perf_counter() - started
        print(f"LocalCluster with {args.workers} workers; dashboard: {client.dashboard_link}")

        with timed(timings, "data prep"):
            customers = customer_table(n_customers, n_partitions, args.seed).persist()
            raw = customers[FEATURES].to_dask_array(lengths=True)  # original units
            scaled = StandardScaler().fit_transform(customers[FEATURES])
            X = scaled.to_dask_array(lengths=True).persist()
        print(
            f"customers: {n_customers:,} rows x {len(FEATURES)} features "
            f"({', '.join(FEATURES)}) in {n_partitions} partitions, standardised"
        )

        with timed(timings, "fit"):
            model = KMeans(n_clusters=N_SEGMENTS, random_state=args.seed).fit(X)

        with timed(timings, "predict + summary"):
            labels = model.labels_.rechunk((raw.chunks[0],))
            table = dd.from_dask_array(
                da.concatenate([raw, labels[:, None].astype(raw.dtype)], axis=1),
                columns=[*FEATURES, "segment"],
            )
            grouped = table.groupby("segment")
            means, counts = dask.compute(grouped[FEATURES].mean(), grouped.size())
            found = labels.compute()
            latent = customers["latent_segment"].compute()

    # Segment ids from k-means are arbitrary: number them by mean age.
    means = means.sort_values("age")
    summary = pd.DataFrame(
        {
            "segment": range(len(means)),
            "count": counts.loc[means.index].to_numpy(),
        }
    )
    summary["share"] = summary["count"] / summary["count"].sum()
    for name in FEATURES:
        summary[name] = means[name].to_numpy()
    output = args.output_dir / "customer_segments.csv"
    summary.to_csv(output, index=False, float_format="%.4f")

    print("timings: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in timings.items()))
    print(f"fit: {model.n_iter_} Lloyd iterations, inertia (standardised) {model.inertia_:,.1f}")
    print_summary(summary)
    ari = adjusted_rand_score(np.asarray(latent), np.asarray(found))
    print(f"adjusted Rand index vs the {len(LATENT)} latent segments: {ari:.3f}")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
