"""Start a Dask cluster from a YAML spec file: local, local GPUs, Slurm or PBS.

A spec is data in the shape of dask-jobqueue's configuration: a top-level
``kind`` and the keyword arguments of that kind's cluster class, plus three
optional sections::

    kind: slurm              # local | local-cuda | slurm | pbs
    queue: debug             # ...keyword arguments of SLURMCluster
    cores: 1
    memory: 2GB
    walltime: "00:30:00"
    scale: {jobs: 2}         # or {n_workers: N}; or instead:
    # adapt: {minimum: 0, maximum: 8}
    # security: {ca_file: ca.pem, cert: node.pem, key: node-key.pem}

=============  ==========================================  ==========================
kind           cluster class                               needs
=============  ==========================================  ==========================
local          ``distributed.LocalCluster``                nothing more
local-cuda     ``dask_cuda.LocalCUDACluster``              ``kmeans_dask[gpu]``
slurm          ``dask_jobqueue.SLURMCluster``              ``kmeans_dask[hpc]``
pbs            ``dask_jobqueue.PBSCluster``                ``kmeans_dask[hpc]``
=============  ==========================================  ==========================

The cluster class is the authority on its keys: this module keeps no list
of them. A jobqueue cluster rejects a key it does not know when it is
created, before its scheduler starts and before any job is submitted;
:func:`from_spec` re-raises that as a ``ValueError`` that names the spec
file and the closest key of dask-jobqueue's configuration for that
scheduler. ``LocalCluster`` (and ``LocalCUDACluster``, which passes its
extra keys to it) hands the keys it does not know to its workers, in the
worker processes, where a misspelt key would surface only as "Nanny failed
to start" (or never, with no workers yet): so for local kinds the keys are
checked first, before anything starts, against the parameters of the
cluster class and of the ``Worker`` and ``Nanny`` it documents passing them
to. Dashes may be used for underscores, as in dask-jobqueue's YAML.

Security defaults: unless the spec says otherwise, the scheduler and the
dashboard listen on 127.0.0.1 only (and, for jobqueue kinds, the workers
too, since a scheduler on the loopback interface can only be reached from
the same machine). On a real multi-node cluster set ``interface`` (e.g.
``ib0``) or ``scheduler_options: {host: ...}``. A ``security`` section turns
on TLS with ``require_encryption=True``: plain TCP connections are refused.

Examples
--------
>>> from kmeans_dask import KMeans
>>> from kmeans_dask.clusters import from_spec
>>> handle = from_spec("cluster_specs/slurm.yaml", jobs=4, walltime="01:00:00")  # doctest: +SKIP
>>> handle.cluster.job_script()  # what sbatch will get; nothing submitted yet  # doctest: +SKIP
>>> with handle as client:  # submits the 4 jobs; leaving cancels them  # doctest: +SKIP
...     handle.wait_for_workers(timeout=300)
...     model = KMeans(n_clusters=8).fit(X)
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import dask
from distributed import Client
from distributed.security import Security

__all__ = ["KINDS", "ClusterHandle", "ClusterSpec", "from_spec", "load_spec"]

#: Top-level keys that are not arguments of the cluster class.
SECTIONS = ("kind", "scale", "adapt", "security")

#: Localhost-only defaults: the scheduler (and jobqueue workers) bind here.
LOCALHOST = "127.0.0.1"
DEFAULT_DASHBOARD = f"{LOCALHOST}:8787"


@dataclass(frozen=True)
class _Kind:
    module: str
    cls: str
    extra: str
    jobqueue: bool

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.cls}"


#: The kinds of cluster a spec can describe.
KINDS: dict[str, _Kind] = {
    "local": _Kind("distributed", "LocalCluster", "", jobqueue=False),
    "local-cuda": _Kind("dask_cuda", "LocalCUDACluster", "gpu", jobqueue=False),
    "slurm": _Kind("dask_jobqueue", "SLURMCluster", "hpc", jobqueue=True),
    "pbs": _Kind("dask_jobqueue", "PBSCluster", "hpc", jobqueue=True),
}

# Arguments that take Python objects (event loops, classes) or would make the
# handle asynchronous: a spec file cannot meaningfully give them.
_NOT_FROM_SPEC = frozenset(
    {"loop", "asynchronous", "start", "job_cls", "scheduler_cls", "worker_class", "scheduler"}
)

_SCALE_KEYS = {"local": ("n_workers",), "jobqueue": ("n_workers", "jobs")}
_ADAPT_KEYS = {
    "local": (
        "minimum",
        "maximum",
        "minimum_memory",
        "maximum_memory",
        "interval",
        "wait_count",
        "target_duration",
    ),
}
_ADAPT_KEYS["jobqueue"] = (*_ADAPT_KEYS["local"], "minimum_jobs", "maximum_jobs")
_SECURITY_KEYS = ("ca_file", "cert", "key")


@dataclass(frozen=True)
class ClusterSpec:
    """A validated cluster spec, with overrides and defaults applied.

    Attributes
    ----------
    path : Path
        The spec file.
    kind : str
        One of ``KINDS``.
    kwargs : dict
        Keyword arguments for the cluster class.
    scale : dict or None
        ``{"n_workers": N}`` or ``{"jobs": N}``: the size asked for.
    adapt : dict or None
        Arguments of ``cluster.adapt`` (``minimum``, ``maximum``, ...).
    security : dict or None
        Absolute paths ``ca_file``, ``cert`` and ``key`` for TLS.
    overridden : frozenset of str
        The keys of ``kwargs`` that overrides set (error messages say so).
    """

    path: Path
    kind: str
    kwargs: dict[str, Any]
    scale: dict[str, int] | None = None
    adapt: dict[str, Any] | None = None
    security: dict[str, str] | None = field(default=None)
    overridden: frozenset[str] = frozenset()

    @property
    def cluster_class(self) -> str:
        """Dotted name of the cluster class, e.g. ``dask_jobqueue.SLURMCluster``."""
        return KINDS[self.kind].qualname


# --- loading and validating ----------------------------------------------------------


def load_spec(path: str | os.PathLike, **overrides: Any) -> ClusterSpec:
    """Read, validate and complete a spec file, without starting anything.

    Whether the cluster class takes each key is checked by
    :func:`from_spec`: the class is the authority on its keys.

    Parameters
    ----------
    path : str or os.PathLike
        The YAML spec file.
    **overrides
        Values that replace the file's; see :func:`from_spec`.

    Returns
    -------
    ClusterSpec
        The cluster class arguments with overrides and the localhost
        defaults applied, and the ``scale``/``adapt``/``security`` sections.

    Raises
    ------
    ValueError
        The file is not a mapping, has no or an unknown ``kind``, a key that
        takes a Python object, a bad section or count, or an unquoted
        walltime.
    ImportError
        dask_jobqueue is missing for ``slurm``/``pbs`` (its configuration
        gives the defaults); ``local-cuda`` specs are read without dask_cuda.
    """
    path = Path(path)
    data = _read_yaml(path)
    kind = data.pop("kind", None)
    if kind is None:
        raise ValueError(f"{path}: no 'kind' key; give one of {', '.join(KINDS)}")
    if kind not in KINDS:
        raise ValueError(
            f"{path}: unknown kind {kind!r}{_suggest(str(kind), KINDS)}; "
            f"accepted kinds: {', '.join(KINDS)}"
        )
    info = KINDS[kind]
    family = "jobqueue" if info.jobqueue else "local"
    if info.jobqueue:
        _import_cluster_class(kind, path)  # an ImportError naming the file and the extra
    spec = {_normalize(key): value for key, value in data.items()}
    sections = {name: spec.pop(name, None) for name in SECTIONS[1:]}
    for key in spec:
        _check_settable(key, f"{path}")
    for name, allowed in (
        ("scale", _SCALE_KEYS[family]),
        ("adapt", _ADAPT_KEYS[family]),
        ("security", _SECURITY_KEYS),
    ):
        sections[name] = _check_section(name, sections[name], allowed, f"{path}")
    if "n_workers" in spec:
        if sections["scale"] is not None:
            raise ValueError(f"{path}: give either n_workers or a scale section, not both")
        sections["scale"] = {"n_workers": spec.pop("n_workers")}
    if sections["security"] is not None:
        sections["security"] = {
            name: _resolve(value, path.parent) for name, value in sections["security"].items()
        }

    overridden = _apply_overrides(spec, sections, overrides, family, path)

    if sections["scale"] is not None and sections["adapt"] is not None:
        raise ValueError(
            f"{path}: both 'scale' and 'adapt' are given; a cluster either has a fixed size "
            "(scale) or adapts to its load (adapt)"
        )
    if sections["scale"] is not None and "jobs" in sections["scale"] and not info.jobqueue:
        raise ValueError(
            f"{path}: scale.jobs is for batch-job clusters (slurm, pbs); "
            f"a {kind} cluster takes scale.n_workers"
        )
    security = sections["security"]
    if security is not None:
        missing = [name for name in _SECURITY_KEYS if not security.get(name)]
        if missing:
            raise ValueError(f"{path}: security needs {', '.join(missing)} (TLS file paths)")
    if info.jobqueue and isinstance(spec.get("walltime"), int | float):
        raise ValueError(
            f"{path}: walltime {spec['walltime']!r} was read as a number (YAML reads "
            'unquoted 30:00 as base-60 integer 1800); quote it: walltime: "00:30:00"'
        )
    _check_counts(spec, sections, path)
    _apply_localhost_defaults(spec, kind)
    return ClusterSpec(
        path=path,
        kind=kind,
        kwargs=spec,
        scale=sections["scale"],
        adapt=sections["adapt"],
        security=security,
        overridden=overridden,
    )


#: Keys that count something a cluster cannot have zero (or fewer) of.
_POSITIVE_COUNTS = ("threads_per_worker", "cores", "processes", "nthreads")


def _check_counts(spec: dict[str, Any], sections: dict[str, Any], path: Path) -> None:
    """Counts must be whole numbers: >= 1 per worker, >= 0 workers or jobs in total."""
    counts = [
        (key, spec[key], 1)
        for key in _POSITIVE_COUNTS
        # a LocalCluster's processes is a switch, a job's a count
        if key in spec and not (key == "processes" and isinstance(spec[key], bool))
    ]
    counts += [(f"scale.{k}", v, 0) for k, v in (sections["scale"] or {}).items()]
    counts += [
        (f"adapt.{k}", v, 0)
        for k, v in (sections["adapt"] or {}).items()
        if k in ("minimum", "maximum", "minimum_jobs", "maximum_jobs")
    ]
    for key, value, minimum in counts:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{path}: {key} must be an integer >= {minimum}, got {value!r}")


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"cluster spec file {path} does not exist") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: a cluster spec is a YAML mapping (kind: ..., key: value, ...), "
            f"got {type(data).__name__}"
        )
    return data


def _normalize(key: Any) -> str:
    """dask-jobqueue's YAML spells keys with dashes; Python arguments use underscores."""
    return str(key).replace("-", "_")


def _suggest(key: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_settable(key: str, where: str) -> None:
    if key in _NOT_FROM_SPEC:
        raise ValueError(
            f"{where}: key {key!r} takes a Python object and cannot be set from a spec file"
        )


def _check_section(
    name: str, value: Any, allowed: tuple[str, ...], where: str
) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{where}: {name} must be a mapping of {', '.join(allowed)}, "
            f"got {type(value).__name__} {value!r}"
        )
    section = {_normalize(key): item for key, item in value.items()}
    for key in section:
        if key not in allowed:
            raise ValueError(
                f"{where}: unknown key {key!r} in {name}{_suggest(key, allowed)}. "
                f"Accepted keys: {', '.join(allowed)}"
            )
    if name == "scale" and len(section) != 1:
        raise ValueError(f"{where}: scale takes exactly one of {', '.join(allowed)}")
    return section


def _resolve(value: Any, base: Path) -> str:
    """A path from a spec: ``~`` expanded, relative to ``base``."""
    return str((base / Path(str(value)).expanduser()).resolve())


def _apply_overrides(
    spec: dict[str, Any],
    sections: dict[str, Any],
    overrides: dict[str, Any],
    family: str,
    path: Path,
) -> frozenset[str]:
    """Merge the keyword overrides of from_spec into the file's values, in place.

    Returns the cluster arguments they set.
    """
    where = f"overrides for {path}"
    overridden = set()
    for raw_key, value in overrides.items():
        key = _normalize(raw_key)
        if key == "kind":
            raise ValueError(f"{where}: kind cannot be overridden; use another spec file")
        if key in ("jobs", "n_workers"):
            sections["scale"] = _check_section("scale", {key: value}, _SCALE_KEYS[family], where)
            sections["adapt"] = None
        elif key in ("scale", "adapt", "security"):
            allowed = {"scale": _SCALE_KEYS[family], "adapt": _ADAPT_KEYS[family]}
            section = _check_section(key, value, allowed.get(key, _SECURITY_KEYS), where)
            if key == "security" and section is not None:
                section = {name: _resolve(item, Path.cwd()) for name, item in section.items()}
            sections[key] = section
            if key in ("scale", "adapt") and value is not None:
                sections["adapt" if key == "scale" else "scale"] = None
        elif key.startswith(("adapt_", "security_")):
            name, sub = key.split("_", 1)
            allowed = _ADAPT_KEYS[family] if name == "adapt" else _SECURITY_KEYS
            section = dict(sections[name] or {})
            section.update(_check_section(name, {sub: value}, allowed, where) or {})
            if name == "security":
                section[sub] = _resolve(value, Path.cwd())
            else:
                sections["scale"] = None
            sections[name] = section
        else:
            _check_settable(key, where)
            spec[key] = value
            overridden.add(key)
    return frozenset(overridden)


def _apply_localhost_defaults(spec: dict[str, Any], kind: str) -> None:
    """Bind scheduler and dashboard (and jobqueue workers) to 127.0.0.1 unless told otherwise."""
    if not KINDS[kind].jobqueue:
        if not any(spec.get(key) for key in ("host", "ip", "interface")):
            spec["host"] = LOCALHOST
        spec.setdefault("dashboard_address", DEFAULT_DASHBOARD)
        return
    # dask-jobqueue takes host and dashboard_address only through scheduler_options,
    # and ignores its configured scheduler-options when the argument is given.
    config_name = kind  # dask-jobqueue's configuration section: jobqueue.slurm, jobqueue.pbs
    options = spec.get("scheduler_options")
    if options is None:
        options = dask.config.get(f"jobqueue.{config_name}.scheduler-options", {}) or {}
    options = dict(options)
    for key in ("host", "dashboard_address"):
        if key in spec:  # a top-level host/dashboard_address (e.g. an override) wins
            options[key] = spec.pop(key)
    interface = spec.get("interface") or dask.config.get(f"jobqueue.{config_name}.interface")
    if not interface and not options.get("host") and not options.get("interface"):
        options["host"] = LOCALHOST
    options.setdefault("dashboard_address", DEFAULT_DASHBOARD)
    spec["scheduler_options"] = options
    if not interface and _is_loopback(options.get("host")):
        # A scheduler on the loopback interface only has workers on this machine:
        # keep the workers (and their dashboards) on it too.
        args = spec.get("worker_extra_args")
        if args is None:
            args = dask.config.get(f"jobqueue.{config_name}.worker-extra-args", []) or []
        args = list(args)
        if not any(str(arg).split("=")[0] in ("--host", "--interface") for arg in args):
            args += ["--host", LOCALHOST]
        spec["worker_extra_args"] = args


def _is_loopback(host: Any) -> bool:
    if not host:
        return False
    host = str(host).split("://")[-1]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- starting ------------------------------------------------------------------------


def _import_cluster_class(kind: str, path: Path | None = None) -> type:
    info = KINDS[kind]
    try:
        module = importlib.import_module(info.module)
    except ImportError as exc:
        where = f" ({path})" if path is not None else ""
        raise ImportError(
            f"a {kind!r} cluster{where} needs {info.module}, which is not installed: "
            f"pip install 'kmeans_dask[{info.extra}]'"
        ) from exc
    return getattr(module, info.cls)


def _local_parameters(cls: type) -> frozenset[str]:
    """The parameters of a local cluster class and of the Worker and Nanny it passes keys to.

    LocalCluster documents that it passes keyword arguments it does not take
    itself to its workers' class (``Nanny``, or ``Worker`` in-process).
    """
    from distributed import LocalCluster, Nanny, Worker

    return (
        frozenset(
            name
            for each in {cls, LocalCluster, Worker, Nanny}
            for name, parameter in inspect.signature(each).parameters.items()
            if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
        )
        - _NOT_FROM_SPEC
    )


def _jobqueue_keys(kind: str) -> frozenset[str]:
    """The keys of dask-jobqueue's configuration for this kind (``jobqueue.slurm``, ...)."""
    return frozenset(_normalize(key) for key in dask.config.get(f"jobqueue.{kind}", {}))


def _unknown_key(spec: ClusterSpec, key: str, candidates: frozenset[str], listed: str) -> str:
    """The message for a key the cluster class does not take: where, the closest, the keys."""
    where = f"overrides for {spec.path}" if key in spec.overridden else f"{spec.path}"
    names = candidates | set(SECTIONS)
    return (
        f"{where}: unknown key {key!r} for kind {spec.kind!r} ({spec.cluster_class} does not "
        f"take it){_suggest(key, names)}. {listed}: {', '.join(sorted(names))}"
    )


def _rejected_key(exc: Exception) -> str | None:
    """The key named by Python's "got an unexpected keyword argument 'key'", if any."""
    match = re.search(r"unexpected keyword argument '([^']+)'", str(exc))
    return match.group(1) if match else None


def _create(cls: type, kwargs: dict[str, Any], spec: ClusterSpec) -> Any:
    """``cls(**kwargs)``; a key the class rejects re-raised naming the spec and the closest key."""
    if not KINDS[spec.kind].jobqueue:
        accepted = _local_parameters(cls)
        for key in spec.kwargs:
            if key not in accepted:
                raise ValueError(_unknown_key(spec, key, accepted, "Accepted keys"))
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # dask-jobqueue wraps the TypeError in a ValueError
        key = _rejected_key(exc)
        if key is None or key not in spec.kwargs:
            raise
        listed = f"Keys of dask-jobqueue's jobqueue.{spec.kind} configuration"
        raise ValueError(_unknown_key(spec, key, _jobqueue_keys(spec.kind), listed)) from exc


def _security(spec: ClusterSpec) -> Security | None:
    if spec.security is None:
        return None
    for name in _SECURITY_KEYS:
        file = Path(spec.security[name])
        if not file.is_file():
            raise FileNotFoundError(
                f"{spec.path}: security.{name} file {file} does not exist; create the TLS "
                f"files or point at yours with from_spec(..., security_{name}='...')"
            )
    ca, cert, key = (spec.security[name] for name in _SECURITY_KEYS)
    return Security(
        tls_ca_file=ca,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
        require_encryption=True,
    )


def from_spec(path: str | os.PathLike, **overrides: Any) -> ClusterHandle:
    """Create the cluster a YAML spec file describes.

    Parameters
    ----------
    path : str or os.PathLike
        The spec file (see the module docstring and ``cluster_specs/``).
        Relative certificate paths in it are relative to the file.
    **overrides
        Replace the file's values: any cluster argument (``cores=2``,
        ``memory="4GB"``, ``walltime="01:00:00"``, ``python=sys.executable``,
        ``queue=...``); ``jobs=N`` or ``n_workers=N`` (replace ``scale`` and
        drop ``adapt``); ``adapt_minimum=``/``adapt_maximum=`` (and any other
        ``adapt_<key>``; they drop ``scale``); ``security_ca_file=``,
        ``security_cert=``, ``security_key=`` (relative to the current
        directory); or whole sections ``scale=``/``adapt=``/``security=``
        (a dict, or None to remove the section).

    Returns
    -------
    ClusterHandle
        Holds the created cluster: for local kinds the scheduler and the
        ``n_workers`` workers are running; for slurm/pbs only the scheduler,
        and no job is submitted until the handle is entered (or
        :meth:`ClusterHandle.start` called), so ``handle.cluster.job_script()``
        can be inspected for free.

    Raises
    ------
    ValueError
        Invalid spec (see :func:`load_spec`), or a key the cluster class
        does not take: the message names the spec file (or its overrides),
        the key and the closest valid key. Nothing is left running.
    ImportError
        The kind needs an optional dependency that is missing; the message
        names the pip extra (``kmeans_dask[hpc]``, ``kmeans_dask[gpu]``).
    FileNotFoundError
        The spec file or a TLS file does not exist.
    """
    spec = load_spec(path, **overrides)
    cls = _import_cluster_class(spec.kind, spec.path)
    security = _security(spec)
    kwargs = dict(spec.kwargs)
    if security is not None:
        kwargs["security"] = security
        if not KINDS[spec.kind].jobqueue:
            protocol = kwargs.setdefault("protocol", "tls://")
            if not str(protocol).startswith("tls"):
                raise ValueError(f"{spec.path}: security needs protocol tls, got {protocol!r}")
    if not KINDS[spec.kind].jobqueue:
        if spec.scale is not None:
            kwargs["n_workers"] = spec.scale["n_workers"]
        elif spec.adapt is not None:
            kwargs["n_workers"] = spec.adapt.get("minimum", 0)
    return ClusterHandle(_create(cls, kwargs, spec), spec, security)


class ClusterHandle:
    """A cluster made from a spec, usable as a context manager yielding a Client.

    Entering (or :meth:`start`) submits the jobs of a ``scale`` section (or
    turns on adaptivity) and opens a ``distributed.Client``, set as the
    default client so that ``KMeans.fit`` runs on the cluster. Leaving (or
    :meth:`close`) closes the client, then the cluster (cancelling its jobs).

    Parameters
    ----------
    cluster : distributed.deploy.Cluster
        The created cluster.
    spec : ClusterSpec
        The spec it was made from.
    security : distributed.security.Security or None
        TLS settings shared by cluster and client.

    Attributes
    ----------
    cluster : distributed.deploy.Cluster
        The underlying cluster (``cluster.job_script()`` for jobqueue kinds).
    spec : ClusterSpec
        The validated spec, with overrides and defaults.
    security : distributed.security.Security or None
    client : distributed.Client or None
        The client, once started.
    """

    def __init__(self, cluster: Any, spec: ClusterSpec, security: Security | None = None):
        self.cluster = cluster
        self.spec = spec
        self.security = security
        self.client: Client | None = None
        self._closed = False

    @property
    def scheduler_address(self) -> str:
        """The scheduler's address, e.g. ``tcp://127.0.0.1:40321``."""
        return self.cluster.scheduler_address

    def start(self) -> Client:
        """Submit jobs / scale or adapt, then open (once) and return the client.

        Returns
        -------
        distributed.Client
            Connected to the scheduler; workers may still be arriving: see
            :meth:`wait_for_workers`.
        """
        if self._closed:
            raise RuntimeError("this ClusterHandle is closed")
        if self.client is not None:
            return self.client
        jobqueue = KINDS[self.spec.kind].jobqueue
        if self.spec.scale is not None and jobqueue:
            if "jobs" in self.spec.scale:
                self.cluster.scale(jobs=self.spec.scale["jobs"])
            else:
                self.cluster.scale(self.spec.scale["n_workers"])
        if self.spec.adapt is not None:
            self.cluster.adapt(**self.spec.adapt)
        self.client = Client(self.cluster, security=self.security)
        return self.client

    def expected_workers(self) -> int:
        """Number of workers the spec asks for (adapt: its minimum, at least 1)."""
        if self.spec.adapt is not None:
            minimum = self.spec.adapt.get("minimum") or 0
            if KINDS[self.spec.kind].jobqueue and self.spec.adapt.get("minimum_jobs"):
                minimum = max(minimum, self.spec.adapt["minimum_jobs"] * self._per_job())
            return max(1, minimum)
        if self.spec.scale is None:
            return max(1, len(getattr(self.cluster, "worker_spec", {})))
        if "jobs" in self.spec.scale:
            return self.spec.scale["jobs"] * self._per_job()
        return self.spec.scale["n_workers"]

    def _per_job(self) -> int:
        """Workers per batch job: the ``--nworkers`` of the job script (1 without it)."""
        match = re.search(r"--nworkers[ =](\d+)", self.cluster.job_script())
        return int(match.group(1)) if match else 1

    def wait_for_workers(self, n_workers: int | None = None, timeout: float = 120) -> Client:
        """Start if needed and block until the workers have joined.

        Parameters
        ----------
        n_workers : int, optional
            Default :meth:`expected_workers`.
        timeout : float, default=120
            Seconds; ``TimeoutError`` after that.

        Returns
        -------
        distributed.Client
        """
        client = self.start()
        client.wait_for_workers(n_workers or self.expected_workers(), timeout=timeout)
        return client

    def close(self) -> None:
        """Close the client and the cluster (cancelling batch jobs); idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.client is not None:
                self.client.close()
        finally:
            self.cluster.close()

    def __enter__(self) -> Client:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("started" if self.client else "created")
        return (
            f"<ClusterHandle {self.spec.kind} from {self.spec.path} ({state}): "
            f"{self.spec.cluster_class} at {self.cluster.scheduler_address}>"
        )
