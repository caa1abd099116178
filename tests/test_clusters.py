"""Cluster spec files: validation, overrides, localhost defaults, a fit on local and TLS."""

from __future__ import annotations

import datetime
import importlib.util
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

import numpy as np
import psutil
import pytest
from distributed import Client
from distributed.deploy.spec import SpecCluster

from kmeans_dask import KMeans
from kmeans_dask.clusters import KINDS, ClusterHandle, from_spec, load_spec

SPECS = Path(__file__).resolve().parents[1] / "cluster_specs"
SPEC_FILES = sorted(SPECS.glob("*.yaml"))
LOCALHOST = "127.0.0.1"
HAS_JOBQUEUE = importlib.util.find_spec("dask_jobqueue") is not None


def _spec(name: str) -> Path:
    return SPECS / f"{name}.yaml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def _host(address: str) -> str:
    return urlparse(address).hostname


# --- every spec file -----------------------------------------------------------------


def test_the_expected_spec_files_exist():
    assert {path.stem for path in SPEC_FILES} >= {"local", "local-cuda", "slurm", "pbs", "tls"}


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda path: path.stem)
def test_every_spec_file_is_valid(path):
    kind = load_spec(path).kind  # the first read: validates every key
    if KINDS[kind].jobqueue and not HAS_JOBQUEUE:
        pytest.skip("dask_jobqueue is not installed")
    spec = load_spec(path)
    assert spec.scale is None or spec.adapt is None
    if KINDS[kind].jobqueue:
        assert spec.kwargs["scheduler_options"]["host"] == LOCALHOST
        assert _host("tcp://" + spec.kwargs["scheduler_options"]["dashboard_address"]) == LOCALHOST
        assert spec.kwargs["worker_extra_args"][-2:] == ["--host", LOCALHOST]
    else:
        assert spec.kwargs["host"] == LOCALHOST
        assert spec.kwargs["dashboard_address"].startswith(f"{LOCALHOST}:")


@pytest.mark.skipif(not HAS_JOBQUEUE, reason="dask_jobqueue is not installed")
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "slurm",
            ["#SBATCH -p debug", "--cpus-per-task=1", "#SBATCH --mem=2G", "#SBATCH -t 00:30:00"],
        ),
        ("pbs", ["#PBS -q workq", "select=1:ncpus=1:mem=", "#PBS -l walltime=00:30:00"]),
    ],
)
def test_jobqueue_spec_builds_its_job_script_without_submitting(name, expected):
    handle = from_spec(_spec(name), python=sys.executable, dashboard_address=f"{LOCALHOST}:0")
    try:
        script = handle.cluster.job_script()
        for text in [*expected, "--nthreads 1", "--memory-limit", "--host 127.0.0.1"]:
            assert text in script, script
        assert f"{sys.executable} -m distributed.cli.dask_worker tcp://127.0.0.1:" in script
        assert _host(handle.scheduler_address) == LOCALHOST
        assert handle.spec.scale == {"jobs": 2}
        assert handle.client is None and not handle.cluster.workers  # nothing submitted
        assert handle.expected_workers() == 2
    finally:
        handle.close()
    handle.close()  # idempotent


@pytest.mark.skipif(not HAS_JOBQUEUE, reason="dask_jobqueue is not installed")
def test_overrides_replace_the_file_values():
    handle = from_spec(
        _spec("slurm"),
        cores=4,
        processes=2,
        memory="4GB",
        walltime="01:00:00",
        jobs=3,
        python=sys.executable,
        dashboard_address=f"{LOCALHOST}:0",
    )
    try:
        script = handle.cluster.job_script()
        assert "--cpus-per-task=4" in script and "#SBATCH --mem=4G" in script
        assert "#SBATCH -t 01:00:00" in script and "--nthreads 2 --memory-limit" in script
        assert "--nworkers 2" in script
        assert handle.spec.scale == {"jobs": 3}
        assert handle.expected_workers() == 6  # two worker processes per job
    finally:
        handle.close()

    adaptive = load_spec(_spec("slurm"), adapt_minimum=0, adapt_maximum=4)
    assert adaptive.adapt == {"minimum": 0, "maximum": 4} and adaptive.scale is None
    assert load_spec(_spec("slurm"), adapt={"maximum_jobs": 3}).adapt == {"maximum_jobs": 3}
    # dashes as in dask-jobqueue's YAML, and a section removed with None
    spec = load_spec(_spec("slurm"), **{"death-timeout": 5}, scale=None)
    assert spec.kwargs["death_timeout"] == 5 and spec.scale is None
    # interface (a real cluster's network) turns off the localhost binding
    spec = load_spec(_spec("slurm"), interface="ib0")
    assert "host" not in spec.kwargs["scheduler_options"]
    assert "--host" not in spec.kwargs.get("worker_extra_args", [])


def test_local_and_tls_overrides(tmp_path, monkeypatch):
    assert load_spec(_spec("local"), n_workers=1).scale == {"n_workers": 1}
    assert load_spec(_spec("local"), host="0.0.0.0").kwargs["host"] == "0.0.0.0"
    spec = load_spec(_spec("local"), adapt_minimum=1, adapt_maximum=3)
    assert spec.adapt == {"minimum": 1, "maximum": 3} and spec.scale is None
    # file paths are relative to the spec file, override paths to the current directory
    tls = load_spec(_spec("tls"))
    assert tls.security["ca_file"] == str(SPECS / "certs" / "ca.pem")
    monkeypatch.chdir(tmp_path)
    tls = load_spec(_spec("tls"), security_cert="node.pem")
    assert tls.security["cert"] == str(tmp_path / "node.pem")
    assert tls.security["key"] == str(SPECS / "certs" / "node-key.pem")


def test_missing_tls_file_says_how_to_override(tmp_path):
    with pytest.raises(FileNotFoundError, match="security_ca_file="):
        from_spec(_spec("tls"), security_ca_file=tmp_path / "missing.pem")


# --- errors --------------------------------------------------------------------------


@pytest.fixture
def nothing_starts(monkeypatch):
    """Fail the test if a cluster starts: every cluster class starts its scheduler here."""

    def started(*args, **kwargs):
        raise AssertionError("a cluster started")

    monkeypatch.setattr(SpecCluster, "__init__", started)


LOCAL_TYPO = "kind: local\nthreads_per_wroker: 1\n"
SLURM_TYPO = 'kind: slurm\ncores: 1\nmemory: 1GB\nwaltime: "00:10:00"\n'
PBS_TYPO = "kind: pbs\nqueu: workq\ncores: 1\nmemory: 1GB\n"
NEEDS_JOBQUEUE = pytest.mark.skipif(not HAS_JOBQUEUE, reason="dask_jobqueue is not installed")


@pytest.mark.parametrize(
    ("text", "overrides", "match"),
    [
        (
            LOCAL_TYPO,
            {},
            r"spec.yaml: unknown key 'threads_per_wroker' for kind 'local' \(distributed"
            r"\.LocalCluster does not take it\) \(did you mean 'threads_per_worker'\?\)\. "
            r"Accepted keys: .*memory_limit",
        ),
        ("kind: local\nwalltime: 1\n", {}, "unknown key 'walltime' for kind 'local'"),
        ("kind: local\nscael: {n_workers: 1}\n", {}, r"'scael'.*did you mean 'scale'\?"),
        (
            "kind: local\n",
            {"n_wrokers": 2},
            r"overrides for .*spec.yaml: unknown key 'n_wrokers'.*did you mean 'n_workers'",
        ),
        pytest.param(
            SLURM_TYPO,
            {},
            r"spec.yaml: unknown key 'waltime' for kind 'slurm' \(dask_jobqueue.SLURMCluster "
            r"does not take it\) \(did you mean 'walltime'\?\)\. Keys of dask-jobqueue's "
            r"jobqueue.slurm configuration: .*job_extra_directives",
            marks=NEEDS_JOBQUEUE,
        ),
        pytest.param(
            SLURM_TYPO.replace("waltime", "walltime"),
            {"coers": 2},
            r"overrides for .*spec.yaml: unknown key 'coers'.*did you mean 'cores'\?",
            marks=NEEDS_JOBQUEUE,
        ),
        pytest.param(
            PBS_TYPO, {}, r"'queu' for kind 'pbs'.*did you mean 'queue'\?", marks=NEEDS_JOBQUEUE
        ),
    ],
)
def test_a_key_the_cluster_does_not_take_names_the_file_and_closest_key_and_starts_nothing(
    tmp_path, nothing_starts, text, overrides, match
):
    path = _write(tmp_path, text)
    load_spec(path, **overrides)  # the structure is valid: the class is the judge of its keys
    with pytest.raises(ValueError, match=match) as info:
        from_spec(path, **overrides)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda path: path.stem)
def test_every_spec_file_has_only_keys_its_cluster_class_takes(path, tmp_path, nothing_starts):
    spec = load_spec(path)
    if spec.kind == "local-cuda":
        pytest.importorskip("dask_cuda", reason="dask-cuda is not installed (kmeans_dask[gpu])")
    if KINDS[spec.kind].jobqueue and not HAS_JOBQUEUE:
        pytest.skip("dask_jobqueue is not installed")
    tls_files = {}
    for name in spec.security or {}:  # placeholders: the class only keeps the paths
        tls_files[f"security_{name}"] = tmp_path / f"{name}.pem"
        tls_files[f"security_{name}"].touch()
    with pytest.raises(AssertionError, match="a cluster started"):  # the keys were taken
        from_spec(path, **tls_files)


@NEEDS_JOBQUEUE
def test_jobqueue_keys_reach_the_cluster_class():
    # job keywords and dask-jobqueue configuration keys (dashes or underscores) are accepted
    keys = {
        "job_cpu": 2,
        "job_mem": "3GB",
        "account": "x",
        "job-extra-directives": ["--exclusive"],
    }
    handle = from_spec(
        _spec("slurm"), python=sys.executable, dashboard_address=f"{LOCALHOST}:0", **keys
    )
    try:
        script = handle.cluster.job_script()
    finally:
        handle.close()
    assert "#SBATCH --cpus-per-task=2" in script and "#SBATCH --mem=3G" in script
    assert "#SBATCH -A x" in script and "#SBATCH --exclusive" in script


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[1, 2]\n", "a cluster spec is a YAML mapping"),
        ("cores: 1\n", "no 'kind' key"),
        ("kind: slrum\n", r"unknown kind 'slrum' \(did you mean 'slurm'\?\)"),
        ("kind: local\nloop: x\n", "'loop' takes a Python object"),
        ("kind: slurm\nasynchronous: true\n", "'asynchronous' takes a Python object"),
        ("kind: local\nscale: {n_workers: 1}\nadapt: {maximum: 2}\n", "both 'scale' and 'adapt'"),
        ("kind: local\nscale: {jobs: 2}\n", "unknown key 'jobs' in scale"),
        ("kind: local\nscale: 2\n", "scale must be a mapping"),
        ("kind: local\nn_workers: 1\nscale: {n_workers: 2}\n", "either n_workers or a scale"),
        ("kind: local\nadapt: {maximun: 2}\n", r"'maximun' in adapt \(did you mean 'maximum'"),
        ("kind: local\nsecurity: {ca_file: a.pem}\n", "security needs cert, key"),
        ("kind: local\nthreads_per_worker: 0\n", "threads_per_worker must be an integer >= 1"),
        ("kind: local\nthreads_per_worker: 1.5\n", "must be an integer >= 1, got 1.5"),
        ("kind: local\nscale: {n_workers: -1}\n", "scale.n_workers must be an integer >= 0"),
        ("kind: local\nn_workers: two\n", "scale.n_workers must be an integer >= 0, got 'two'"),
        ("kind: local\nadapt: {maximum: -2}\n", "adapt.maximum must be an integer >= 0"),
    ],
)
def test_invalid_specs(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        load_spec(_write(tmp_path, text))


@pytest.mark.skipif(not HAS_JOBQUEUE, reason="dask_jobqueue is not installed")
def test_unquoted_walltime_is_caught(tmp_path):
    path = _write(tmp_path, "kind: slurm\ncores: 1\nmemory: 1GB\nwalltime: 30:00\n")
    with pytest.raises(ValueError, match="walltime 1800 was read as a number"):
        load_spec(path)


def test_kind_cannot_be_overridden():
    with pytest.raises(ValueError, match="kind cannot be overridden"):
        load_spec(_spec("local"), kind="slurm")


def test_missing_dask_jobqueue_names_the_hpc_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install 'kmeans_dask\[hpc\]'") as info:
        from_spec(_spec("slurm"))
    assert "a 'slurm' cluster" in str(info.value) and "slurm.yaml" in str(info.value)


def test_local_cuda_spec_is_valid_data_and_names_the_gpu_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # as on a machine without dask-cuda
    spec = load_spec(_spec("local-cuda"))
    assert spec.kind == "local-cuda" and spec.cluster_class == "dask_cuda.LocalCUDACluster"
    assert spec.kwargs["device_memory_limit"] == 0.8 and spec.kwargs["host"] == LOCALHOST
    with pytest.raises(ImportError, match=r"needs dask_cuda.*pip install 'kmeans_dask\[gpu\]'"):
        from_spec(_spec("local-cuda"))


class _StandInLocalCUDACluster:
    """LocalCUDACluster's own parameters (a few), the rest passed on as it does; never starts."""

    created: ClassVar[list[dict]] = []
    scheduler_address = "tcp://127.0.0.1:1"

    def __init__(self, CUDA_VISIBLE_DEVICES=None, device_memory_limit=0.8, rmm_pool_size=None,
                 protocol=None, **kwargs):  # fmt: skip
        self.created.append(
            {"CUDA_VISIBLE_DEVICES": CUDA_VISIBLE_DEVICES, "rmm_pool_size": rmm_pool_size,
             "device_memory_limit": device_memory_limit, "protocol": protocol, **kwargs}
        )  # fmt: skip

    def close(self):
        pass


def test_local_cuda_keys_are_checked_against_the_class_and_what_it_passes_on(
    tmp_path, monkeypatch
):
    module = types.ModuleType("dask_cuda")
    module.LocalCUDACluster = _StandInLocalCUDACluster
    monkeypatch.setitem(sys.modules, "dask_cuda", module)
    monkeypatch.setattr(_StandInLocalCUDACluster, "created", [])
    path = _write(tmp_path, "kind: local-cuda\ndevice_memory_limt: 0.5\n")
    with pytest.raises(ValueError, match=r"spec.yaml: unknown key 'device_memory_limt'") as e:
        from_spec(path)
    assert "(did you mean 'device_memory_limit'?)" in str(e.value)
    assert "dask_cuda.LocalCUDACluster does not take it" in str(e.value)
    assert _StandInLocalCUDACluster.created == []  # refused before the class was called
    from_spec(_spec("local-cuda"), CUDA_VISIBLE_DEVICES="0,1", n_workers=2).close()
    (created,) = _StandInLocalCUDACluster.created
    assert created["CUDA_VISIBLE_DEVICES"] == "0,1" and created["device_memory_limit"] == 0.8
    assert created["threads_per_worker"] == 1 and created["n_workers"] == 2  # LocalCluster's
    assert created["host"] == LOCALHOST and created["memory_limit"] == "auto"


def test_a_real_local_cuda_cluster_refuses_a_misspelt_key_before_starting(
    tmp_path, nothing_starts
):
    pytest.importorskip("dask_cuda", reason="dask-cuda is not installed (kmeans_dask[gpu])")
    path = _write(tmp_path, "kind: local-cuda\ndevice_memory_limt: 0.5\n")
    with pytest.raises(ValueError, match=r"'device_memory_limt'.*'device_memory_limit'"):
        from_spec(path)


# --- running -------------------------------------------------------------------------


def _listening_ips(pid: int) -> set[str]:
    return {
        conn.laddr.ip
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }


def _fit_and_check(client: Client) -> KMeans:
    X = np.random.default_rng(0).random((1000, 3))
    model = KMeans(n_clusters=3, random_state=0).fit(X)
    assert model.cluster_centers_.shape == (3, 3)
    assert model.labels_.shape == (1000,)
    nearest = ((X[:, None, :] - model.cluster_centers_[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(model.labels_, nearest.argmin(1))
    assert model.inertia_ == pytest.approx(nearest.min(1).sum())
    return model


def test_local_spec_runs_kmeans_on_localhost_only():
    handle = from_spec(_spec("local"), dashboard_address=f"{LOCALHOST}:0")
    assert isinstance(handle, ClusterHandle)
    with handle as client:
        assert client is handle.client
        handle.wait_for_workers(timeout=60)
        assert _host(client.scheduler.address) == LOCALHOST
        assert _host(client.dashboard_link) == LOCALHOST
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 2
        assert {_host(address) for address in workers} == {LOCALHOST}
        for pid in client.run(os.getpid).values():  # worker processes listen nowhere else
            assert _listening_ips(pid) <= {LOCALHOST}, _listening_ips(pid)
        _fit_and_check(client)
    assert handle.cluster.status.name == "closed"
    assert client.status == "closed"
    assert "closed" in repr(handle)


# --- TLS -----------------------------------------------------------------------------


def _certificates_with_cryptography(directory: Path) -> tuple[Path, Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject, issuer, public_key, signing_key, *, ca: bool):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address(LOCALHOST)), x509.DNSName("localhost")]
                ),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("kmeans-dask test CA", "kmeans-dask test CA", ca_key.public_key(), ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build("localhost", "kmeans-dask test CA", key.public_key(), ca_key, ca=False)
    paths = directory / "ca.pem", directory / "node.pem", directory / "node-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _certificates_with_openssl(directory: Path) -> tuple[Path, Path, Path]:
    ca, ca_key = directory / "ca.pem", directory / "ca-key.pem"
    cert, key, csr = directory / "node.pem", directory / "node-key.pem", directory / "node.csr"
    extensions = directory / "node.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    commands = [
        "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=kmeans-dask-test-ca"
        f" -keyout {ca_key} -out {ca}",
        f"req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout {key} -out {csr}",
        f"x509 -req -in {csr} -CA {ca} -CAkey {ca_key} -CAcreateserial -days 1"
        f" -extfile {extensions} -out {cert}",
    ]
    for command in commands:
        subprocess.run(
            ["openssl", *command.split()], check=True, capture_output=True, cwd=directory
        )
    return ca, cert, key


@pytest.mark.parametrize("maker", ["cryptography", "openssl"])
def test_tls_spec_fits_over_tls_and_refuses_plain_tcp(tmp_path, maker):
    if maker == "cryptography":
        if importlib.util.find_spec("cryptography") is None:
            pytest.skip("the cryptography package is not installed (openssl variant runs)")
        ca, cert, key = _certificates_with_cryptography(tmp_path)
    else:
        if shutil.which("openssl") is None:
            pytest.skip("the openssl command is not installed")
        ca, cert, key = _certificates_with_openssl(tmp_path)

    handle = from_spec(
        _spec("tls"),
        security_ca_file=ca,
        security_cert=cert,
        security_key=key,
        dashboard_address=f"{LOCALHOST}:0",
    )
    assert handle.security.require_encryption
    with handle as client:
        handle.wait_for_workers(timeout=60)
        address = handle.scheduler_address
        assert address.startswith(f"tls://{LOCALHOST}:")
        assert all(w.startswith("tls://") for w in client.scheduler_info()["workers"])
        _fit_and_check(client)
        port = urlparse(address).port
        with pytest.raises((OSError, TimeoutError)):
            Client(f"tcp://{LOCALHOST}:{port}", timeout=3, set_as_default=False)
