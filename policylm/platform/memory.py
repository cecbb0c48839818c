"""Peak resident memory of a job or bench: its own process and the live processes it started
(on one machine, Ray's workers and actors: they descend from the driver's raylet).

Each process's peak is the kernel's high-water mark (``VmHWM`` in ``/proc/<pid>/status``), so a
peak between two reads is not missed; a process that has already exited is not counted.
Unknown (no ``/proc``, as on macOS) is None, never 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _peak_kib(pid: int) -> int | None:
    """``pid``'s peak resident memory in KiB, None when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (children of children...), from ``/proc``."""
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            out += kids
            todo += kids
    return out


def peak_rss_gb() -> dict[str, Any]:
    """``{"self": GB, "largest": GB, "processes": n}``: this process's peak resident memory,
    the largest peak among it and its live descendants, and how many were read; None for a
    figure that cannot be read here."""
    me = _peak_kib(os.getpid())
    peaks = [p for p in (_peak_kib(pid) for pid in _descendants(os.getpid())) if p is not None]
    if me is not None:
        peaks.append(me)
    gb = lambda kib: None if kib is None else round(kib / 2**20, 3)  # noqa: E731
    return {"self": gb(me), "largest": gb(max(peaks)) if peaks else None,
            "processes": len(peaks)}


def with_memory(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with ``peak_rss_gb`` (:func:`peak_rss_gb`) added, as a job writes them."""
    return {**metrics, "peak_rss_gb": peak_rss_gb()}
