"""Sweep results (no Ray): ordering trials by an objective and picking the best."""

from __future__ import annotations

import math
from collections.abc import Sequence


def _value(row: dict, metric: str) -> float | None:
    v = row.get(metric)
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def sort_rows(rows: Sequence[dict], metric: str, mode: str = "max") -> list[dict]:
    """Rows best first by ``metric`` (``mode`` max or min); rows without a finite value (trials
    stopped early or failed) last, in their original order."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be max or min, got {mode!r}")
    scored = [r for r in rows if _value(r, metric) is not None]
    rest = [r for r in rows if _value(r, metric) is None]
    scored.sort(key=lambda r: _value(r, metric), reverse=mode == "max")
    return scored + rest


def best_row(rows: Sequence[dict], metric: str, mode: str = "max") -> dict | None:
    """The best row by ``metric``, or None when no row has a value."""
    ordered = sort_rows(rows, metric, mode)
    return ordered[0] if ordered and _value(ordered[0], metric) is not None else None
