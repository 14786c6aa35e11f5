"""Plain-text tables and number formatting for the CLI."""

from __future__ import annotations

from prune_nas.core.units import human

__all__ = ["human", "table"]


def table(rows: list[list], headers: list[str], align: str | None = None) -> str:
    """A monospaced table; ``align`` is one character per column, 'l' or 'r' (default: numbers right)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if align is None:
        align = "".join("r" if rows and isinstance(rows[0][i], (int, float)) else "l"
                        for i in range(len(headers)))

    def line(values):
        columns = zip(values, widths, align, strict=True)
        return "  ".join(v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in columns).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])
