"""Clusters of more than five workers: every worker counts."""

from __future__ import annotations

import pytest
from distributed import Client, LocalCluster

from kmeans_dask._client import worker_info
from kmeans_dask._inputs import fits_in_memory

MiB = 2**20


@pytest.fixture
def five_listed_by_default(monkeypatch):
    """``Client.scheduler_info()`` as the releases that list five workers unless asked."""
    listing = Client.scheduler_info

    def scheduler_info(self, n_workers: int = 5, **kwargs):
        return listing(self, n_workers=n_workers, **kwargs)

    monkeypatch.setattr(Client, "scheduler_info", scheduler_info)


def test_the_memory_of_every_worker_counts(five_listed_by_default):
    with (
        LocalCluster(
            n_workers=7,
            threads_per_worker=1,
            processes=False,
            memory_limit=100 * MiB,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(7)
        assert len(worker_info(client)) == 7
        # Persisted data may use half of the 700 MiB the seven workers have.
        assert fits_in_memory(client, 340 * MiB)
        assert not fits_in_memory(client, 360 * MiB)
