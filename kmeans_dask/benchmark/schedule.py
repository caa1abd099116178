"""When runs start and in which order: interleaving, waiting for an idle machine."""

from __future__ import annotations

import time
from collections.abc import Sequence

#: Before each timed run, wait (up to the timeout) until the machine's CPU use
#: over one sampling window is below this percentage, so no run starts while
#: the previous one's processes finish their work (a JVM after a Spark fit
#: ran at over one core for its first 0.25 s).
IDLE_CPU_PERCENT = 15.0

IDLE_SAMPLE_SECONDS = 0.2

IDLE_TIMEOUT_SECONDS = 5.0


def run_order(names: Sequence[str], repeat: int) -> list[str]:
    """The order of the implementations in repeat ``repeat``.

    Rotated by ``repeat`` and reversed when it is odd: over the repeats every
    implementation runs in several positions and after different ones.
    """
    shift = repeat % len(names)
    order = [*names[shift:], *names[:shift]]
    return order[::-1] if repeat % 2 else order


def wait_until_idle(
    threshold: float = IDLE_CPU_PERCENT,
    sample_seconds: float = IDLE_SAMPLE_SECONDS,
    timeout: float = IDLE_TIMEOUT_SECONDS,
) -> float:
    """Block until system-wide CPU use over ``sample_seconds`` is below ``threshold`` %.

    Returns
    -------
    float
        The last sample (above ``threshold`` only when ``timeout`` ran out).
    """
    import psutil  # a dependency of distributed

    deadline = time.monotonic() + timeout
    while True:
        busy = psutil.cpu_percent(interval=sample_seconds)
        if busy < threshold or time.monotonic() >= deadline:
            return busy
