"""RSS and CPU of processes on this host, from psutil (the runbook's "Memory growth")."""

from __future__ import annotations

import psutil

_procs: dict[int, psutil.Process] = {}  # kept so cpu_percent measures since the previous refresh


def local_usage(pids: list[int]) -> dict[int, tuple[float, float]]:
    """RSS (MiB) and CPU % of processes on this host; processes elsewhere (or gone) are skipped."""
    usage: dict[int, tuple[float, float]] = {}
    for pid in pids:
        try:
            proc = _procs.get(pid) or _procs.setdefault(pid, psutil.Process(pid))
            with proc.oneshot():
                usage[pid] = (proc.memory_info().rss / 2**20, proc.cpu_percent(None))
        except (psutil.Error, ValueError):
            _procs.pop(pid, None)
    return usage
