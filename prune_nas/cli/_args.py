"""argparse types for every numeric and device flag: a bad value is refused by the parser (one line, exit 2)
instead of being silently replaced by a default (``--threads 0``), accepted (``--lr nan``) or crashing later
(``--threads -1``, ``--device bogus``)."""

from __future__ import annotations

import argparse
import math
import re

MAX_INT = 10**9  # larger than any epoch count, seed count, thread count or input size that makes sense


def _int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if abs(value) > MAX_INT:
        raise argparse.ArgumentTypeError(f"{text} is out of range (at most {MAX_INT:,})")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (epochs, seeds, threads, sizes, counts)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def nonneg_int(text: str) -> int:
    """An integer >= 0 (seeds, padding)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def finite_float(text: str) -> float:
    """A finite number (no nan, inf or 1e400)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rate, width multiplier)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def nonneg_float(text: str) -> float:
    """A finite number >= 0 (momentum, weight decay, L1 weight)."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,3})?")


def device(text: str) -> str:
    """``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``; whether it exists is checked when it is used."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use auto, cpu, cuda or cuda:N")
    return text
