"""Peak resident memory of a process, for benchmarks and memory tests (Linux)."""

from __future__ import annotations

import contextlib
import resource


def reset_peak_rss() -> None:
    """Reset this process's peak resident memory (Linux >= 4.0; else a no-op)."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def peak_rss() -> int:
    """This process's peak resident memory in bytes since start or the last reset."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
