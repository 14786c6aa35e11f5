"""The figure of an ``evaluate`` table: each row's seeds, mean and spread, so the one claim the table tests
(does the architecture trained from scratch match the pruned-and-fine-tuned model?) can be seen at a glance.

matplotlib is imported lazily with the Agg backend (through ``prune_nas.design.mining``'s helpers).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prune_nas.core.units import human

if TYPE_CHECKING:
    from prune_nas.repro.evaluate import Comparison

# Row colours: the unpruned reference grey, fine-tuning orange, training from scratch blue, baselines green.
_COLOURS = {"unpruned": "0.55", "fine-tuned": "C1", "Scratch-E": "C0", "Scratch-B": "C0"}
_BASELINE_COLOUR = "C2"


def plot_comparison(comp: Comparison, path: str | Path) -> Path:
    """A horizontal dot plot, one line per row: every seed's final test top-1 as a dot, the mean as a bar
    with ± one standard deviation, and the row's params, epochs and the p-value of each Welch test against
    Scratch-B in the margin. Written atomically as PNG."""
    from prune_nas.design.mining import _pyplot, _save

    plt = _pyplot()
    rows = [r for r in comp.rows if r.values]
    fig, ax = plt.subplots(figsize=(8.0, 0.55 * len(rows) + 1.6))
    pvalues = {t.b: t.pvalue for t in comp.tests if t.a == "Scratch-B" and t.pvalue is not None}
    for y, row in enumerate(reversed(rows)):
        colour = _COLOURS.get(row.label, _BASELINE_COLOUR)
        values = [100 * v for v in row.values]
        ax.scatter(values, [y] * len(values), s=18, color=colour, alpha=0.7, zorder=3)
        ax.errorbar(100 * row.mean, y, xerr=100 * row.std, fmt="|", markersize=16, color=colour, capsize=4,
                    zorder=4)
        p = pvalues.get(row.label)
        side = f"{human(row.params)} params, {row.epochs_text()} ep" + (f", p={p:.2g} vs B" if p else "")
        ax.annotate(side, (1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [r.label for r in reversed(rows)])
    ax.set_xlabel("final test top-1 (%), each dot one seed; bar: mean ± std")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(comp.title, fontsize=9, loc="left")
    device = comp.meta.get("device")
    if device:
        fig.text(0.01, 0.005, f"{device}; prune-nas {comp.meta.get('prune_nas', '?')}, torch "
                              f"{comp.meta.get('torch', '?')}", fontsize=7, color="0.4")
    return _save(fig, path)
