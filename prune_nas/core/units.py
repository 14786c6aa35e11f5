"""Counts written for people: the one formatter of params, FLOPs and weight counts in tables and messages."""

from __future__ import annotations

_SCALES = (("G", 1e9), ("M", 1e6), ("K", 1e3))


def human(n: float, digits: int = 2) -> str:
    """``n`` with a K/M/G suffix and ``digits`` decimals; below a thousand, whole numbers as they are and
    fractions to three significant digits.

    >>> human(1234567), human(853018, digits=1), human(999), human(12.34), human(-2500)
    ('1.23M', '853.0K', '999', '12.3', '-2.50K')
    """
    for unit, scale in _SCALES:
        if abs(n) >= scale:
            return f"{n / scale:.{digits}f}{unit}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.3g}"
