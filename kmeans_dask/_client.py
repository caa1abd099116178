"""Find the Dask client to fit with, or start a LocalCluster for one fit."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from distributed import Client, LocalCluster, default_client

logger = logging.getLogger(__name__)


def active_client() -> Client | None:
    """The current default ``distributed.Client``, or None if there is none."""
    try:
        return default_client()
    except ValueError:
        return None


@contextmanager
def client_for_fit() -> Iterator[Client]:
    """Yield the active client, or a LocalCluster's client that is closed afterwards.

    The temporary cluster binds to 127.0.0.1 only, and its dashboard link is
    printed so the fit can be watched.
    """
    client = active_client()
    if client is not None:
        yield client
        return
    with (
        LocalCluster(host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        print(
            f"kmeans_dask: started a LocalCluster for this fit; dashboard: {client.dashboard_link}"
        )
        logger.info("LocalCluster %s started for this fit", cluster.scheduler_address)
        yield client


def worker_info(client: Client) -> dict[str, dict]:
    """What the scheduler knows of every worker (memory limit, threads...), by address.

    ``Client.scheduler_info()`` lists at most five workers by default in the
    distributed releases of 2025 to mid-2026; older releases have no
    ``n_workers`` argument and list them all.
    """
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # distributed before 2025.4
        info = client.scheduler_info()
    return info["workers"]
