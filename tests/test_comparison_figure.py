"""The evaluate table's figure: one line per row with every seed, written as a PNG."""

from __future__ import annotations

from prune_nas.repro.comparison_figure import plot_comparison
from prune_nas.repro.evaluate import Comparison, Row, welch


def test_the_figure_has_one_line_per_finished_row_and_names_the_device(tmp_path, monkeypatch):
    rows = [Row(label, f"g-{label}", "k", 120_000, 650_000, "Scratch-B", [10, 10], values, len(values))
            for label, values in (("unpruned", [0.97, 0.975]), ("fine-tuned", [0.93, 0.94]),
                                  ("Scratch-B", [0.983, 0.985]), ("random (params)", []))]
    tests = [welch("Scratch-B", rows[2].values, "fine-tuned", rows[1].values)]
    meta = {"device": "cpu:test", "prune_nas": "0", "torch": "x"}
    comp = Comparison("slimming on vgg11", rows, tests, meta)

    from prune_nas.design import mining

    drawn = {}
    real = mining._save

    def spy(fig, path):
        ax = fig.axes[0]
        drawn["labels"] = [t.get_text() for t in ax.get_yticklabels()]
        drawn["dots"] = sum(len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets"))
        drawn["text"] = " ".join(t.get_text() for t in fig.texts + ax.texts)
        return real(fig, path)

    monkeypatch.setattr(mining, "_save", spy)
    path = plot_comparison(comp, tmp_path / "accuracy.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn["labels"] == ["Scratch-B", "fine-tuned", "unpruned"]  # top to bottom as in the table
    assert drawn["dots"] >= 6  # every seed of the three finished rows
    assert "cpu:test" in drawn["text"] and "p=" in drawn["text"]
