"""Files that a fit or a command will write: checked before the work, described after.

A model file or checkpoint that cannot be written should be refused before
minutes of fitting, not after; and a fit that stops early (Ctrl-C, a lost
scheduler) should say what its checkpoint holds and how to go on.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kmeans_dask._io.checkpoints import read_checkpoint

PathLike = str | os.PathLike


def check_writable(path: PathLike, what: str, *, directory_ok: bool = False) -> None:
    """Refuse, before any work, a file path that cannot be written.

    ``what`` names the argument in the message (``"checkpoint"``,
    ``"--output"``). URLs (``s3://...``) are left to the writer. The test is
    a real one: a temporary file is created in the target's directory and
    removed again. ``directory_ok`` accepts an existing directory at
    ``path`` (a Zarr store to be replaced).

    Raises
    ------
    IsADirectoryError
        If ``path`` is an existing directory.
    FileNotFoundError, NotADirectoryError
        If its directory does not exist, or is a file.
    PermissionError
        If its directory cannot be written.
    ValueError
        If ``path`` exists but is neither a file nor a directory (a FIFO).
    """
    target = os.fspath(path)
    if "://" in target:
        return
    if os.path.isdir(target) and not directory_ok:
        raise IsADirectoryError(
            f"{what}={target!r} is a directory; expected the path of a file (it may lie "
            "inside that directory)"
        )
    if os.path.exists(target) and not os.path.isfile(target) and not os.path.isdir(target):
        raise ValueError(f"{what}={target!r} is not a regular file (a FIFO or a device)")
    directory = os.path.dirname(os.path.abspath(target))
    if not os.path.exists(directory):
        raise FileNotFoundError(
            f"{what}={target!r}: its directory {directory!r} does not exist; create it first"
        )
    if not os.path.isdir(directory):
        raise NotADirectoryError(f"{what}={target!r}: {directory!r} is a file, not a directory")
    try:
        handle, probe = tempfile.mkstemp(dir=directory, prefix=".kmeans-dask-probe-")
    except OSError as exc:
        raise PermissionError(
            f"{what}={target!r}: cannot write to its directory {directory!r} "
            f"({exc.strerror or exc})"
        ) from None
    os.close(handle)
    os.unlink(probe)


def check_readable_file(path: PathLike, what: str) -> None:
    """Refuse a path that exists but is no regular file: reading a FIFO would block forever.

    Raises
    ------
    ValueError
        Naming ``what`` and the kind of path seen.
    """
    target = os.fspath(path)
    if os.path.exists(target) and not os.path.isfile(target):
        kind = "a directory" if os.path.isdir(target) else "a FIFO, socket or device"
        raise ValueError(f"{what} '{target}': not a regular file but {kind}")


def resume_hint(checkpoint: PathLike | None, again: str = "run the same fit again") -> str:
    """One sentence: what ``checkpoint`` holds and how to go on from it."""
    if checkpoint is None:
        return "Nothing was saved; with a checkpoint a rerun would resume."
    target = os.fspath(checkpoint)
    try:
        state = read_checkpoint(target)
    except (OSError, ValueError) as exc:
        return f"Checkpoint {target!r} cannot be read ({exc})."
    if state is None:
        return f"No checkpoint was written to {target!r} yet; {again} to start over."
    if state.completed:
        return f"Checkpoint {target!r} holds the finished fit; {again} to get its result."
    if not state.runs:
        return f"Checkpoint {target!r} holds no iteration yet; {again} to start over."
    return (
        f"Checkpoint {target!r} holds run {len(state.runs)}, iteration "
        f"{len(state.runs[-1].history)}; {again} to resume from there."
    )


def same_or_nested(output: PathLike, source: PathLike) -> bool:
    """Whether writing ``output`` would touch ``source``: the same path, or one inside the other.

    Paths are resolved (``./x``, symlinks); URLs are compared as written.
    """
    first, second = (
        os.fspath(p) if "://" in os.fspath(p) else os.path.realpath(p) for p in (output, source)
    )
    if first == second:
        return True
    first, second = (p.rstrip("/") + "/" for p in (first, second))
    return first.startswith(second) or second.startswith(first)


@contextmanager
def written_whole(
    path: PathLike,
    what: str,
    *,
    overwrite: bool,
    store: bool,
    store_check: Callable[[str], bool] | None = None,
) -> Iterator[str]:
    """Write ``path`` through a temporary sibling that replaces it only when complete.

    Yields the temporary path (a name in the same directory, with the same
    extension) to write to. When the block finishes, the temporary file or
    directory (a Zarr store) takes the place of ``path``; an existing output
    is moved aside first and deleted only after the new one is in place. If
    the block raises (or is interrupted), the temporary output is removed and
    ``path`` is left as it was. URLs are written in place. ``store`` says
    the output is a Zarr store: only an existing Zarr store (never another
    directory) is then replaced; otherwise only a file is. ``store_check``
    recognises another kind of store (a directory of Parquet parts).

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    IsADirectoryError
        If ``path`` is a directory that is not to be replaced.
    """
    target = os.fspath(path)
    is_store = store_check or _is_zarr_store
    if os.path.isdir(target) and not (store and is_store(target)):
        store_kind = "a Zarr store" if store_check is None else "a table of part files"
        kind = f"is a directory but not {store_kind}" if store else "is a directory"
        raise IsADirectoryError(f"{what} {target!r} {kind}; refusing to replace it")
    if os.path.lexists(target) and not overwrite:
        raise FileExistsError(
            f"{what} {target!r} exists; pass --overwrite (overwrite=True) to replace it"
        )
    if "://" in target:
        yield target
        return
    check_writable(target, what, directory_ok=True)
    directory, name = os.path.split(os.path.abspath(target))
    token = secrets.token_hex(4)
    temporary = os.path.join(directory, f".tmp-{token}.{name}")
    try:
        yield temporary
    except BaseException:
        remove_partial(temporary)
        raise
    if os.path.lexists(target):
        aside = os.path.join(directory, f".old-{token}.{name}")
        os.replace(target, aside)
        os.replace(temporary, target)
        remove_partial(aside)
    else:
        os.replace(temporary, target)


def _is_zarr_store(path: str) -> bool:
    return any(
        os.path.exists(os.path.join(path, name)) for name in ("zarr.json", ".zarray", ".zgroup")
    )


#: How long :func:`remove_partial` outlasts tasks still writing into a directory.
_REMOVAL_SECONDS = 10.0


def remove_partial(path: str) -> None:
    """Remove a half-written output file or directory.

    Tasks still running after the error that ended the output may recreate
    their file in a directory between ``rmtree``'s removal of its files and
    of the directory itself, which then stays: it is removed again, for up
    to :data:`_REMOVAL_SECONDS`.
    """
    if os.path.isdir(path) and not os.path.islink(path):
        deadline = time.monotonic() + _REMOVAL_SECONDS
        shutil.rmtree(path, ignore_errors=True)
        while os.path.lexists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
            shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)
