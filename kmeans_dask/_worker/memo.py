"""Values kept next to worker-resident chunks, from one pass to a later one.

Some results of a pass over a chunk are worth keeping in the memory of the
worker that holds the chunk: the Hamerly bounds of one Lloyd iteration for
the next (:mod:`kmeans_dask._worker.bounds`), the labels of the latest Lloyd pass for the
tasks that hand them over as futures (:func:`kmeans_dask._worker.tasks.kept_labels`).
A :class:`ChunkMemo` keeps them there; they never cross the network.

A memo is only an accelerator: whoever finds nothing in it (a retried task,
a chunk recomputed after a worker died, a task run on another worker)
computes the value afresh.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Hashable
from typing import Generic, TypeVar

Value = TypeVar("Value")


class ChunkMemo(Generic[Value]):
    """One value per chunk held by this process, tagged with what made it.

    Entries are keyed by the chunk object itself (held weakly: an entry
    disappears with its chunk) and tagged, e.g. with the run and iteration
    that made them. :meth:`take` removes the entry it returns, so a failed
    task leaves nothing stale behind, and a chunk holds at most one entry.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref, Hashable, Value]] = {}
        self._lock = threading.Lock()

    def take(self, chunk: object, tag: Hashable) -> Value | None:
        """The value kept for ``chunk`` under ``tag``, if any (and forget it)."""
        with self._lock:
            entry = self._entries.pop(id(chunk), None)
        return _value_for(entry, chunk, tag)

    def take_any(self, chunk: object) -> Value | None:
        """The value kept for ``chunk`` under any tag, if any (and forget it)."""
        with self._lock:
            entry = self._entries.pop(id(chunk), None)
        if entry is None or entry[0]() is not chunk:
            return None
        return entry[2]

    def get(self, chunk: object, tag: Hashable) -> Value | None:
        """The value kept for ``chunk`` under ``tag``, if any (and keep it)."""
        with self._lock:
            entry = self._entries.get(id(chunk))
        return _value_for(entry, chunk, tag)

    def put(self, chunk: object, tag: Hashable, value: Value) -> None:
        """Keep ``value`` for ``chunk`` under ``tag``, replacing what it had."""
        key = id(chunk)
        ref = weakref.ref(chunk, lambda _, key=key: self._discard(key))
        with self._lock:
            self._entries[key] = (ref, tag, value)

    def _discard(self, key: int) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


def _value_for(entry: tuple[weakref.ref, Hashable, Value] | None, chunk: object, tag: Hashable):
    """The value of ``entry`` if it was kept for ``chunk`` (this very object) under ``tag``."""
    if entry is None:
        return None
    ref, entry_tag, value = entry
    if ref() is not chunk or entry_tag != tag:
        return None
    return value
