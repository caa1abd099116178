"""Ctrl-C that stops long work between steps, where stopping is clean.

A ``KeyboardInterrupt`` raised at an arbitrary moment can land inside
distributed's own machinery (a ``Client.sync`` call waiting on its event
loop), which then fails on its own with a traceback of its own. Under
:func:`deferred_interrupts` (the command line uses it), the first Ctrl-C
only asks to stop: the work raises ``KeyboardInterrupt`` at its next
:func:`interrupt_point`, which the library places between steps (after each
Lloyd iteration, once its checkpoint is written; between k-means|| rounds;
at every step a progress display counts). A second Ctrl-C stops at once.

Without :func:`deferred_interrupts` (a notebook, a script), nothing changes:
Ctrl-C raises where Python gets it, and the interrupt points do nothing.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_requested = threading.Event()


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Within the block, Ctrl-C stops the work at its next interrupt point.

    Only the main thread can install signal handlers; elsewhere the block
    changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask_to_stop(number: int, frame: object) -> None:
        if _requested.is_set():
            raise KeyboardInterrupt
        _requested.set()
        print(
            "[kmeans_dask] stopping after the current step (Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    _requested.clear()
    previous = signal.signal(signal.SIGINT, ask_to_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()


def interrupt_point() -> None:
    """Raise ``KeyboardInterrupt`` here if Ctrl-C asked the work to stop."""
    if _requested.is_set():
        _requested.clear()
        raise KeyboardInterrupt
