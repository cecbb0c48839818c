"""Numbers as prompt and observation text (light: no env or data imports, so the prompt rules
load on a machine with only torch and transformers)."""

from __future__ import annotations


def format_number(x: float, decimals: int = 2) -> str:
    """Short decimal text: integers without a point, others rounded (``-0.0`` -> ``0``)."""
    x = float(x)
    if x.is_integer():
        return str(int(x))
    s = f"{x:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s
