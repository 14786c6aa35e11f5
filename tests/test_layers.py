"""No import circle anywhere in the package, not even through imports inside functions.

The layer order itself is import-linter's contract (``[tool.importlinter]`` in pyproject.toml, run by
``make test`` as ``lint-imports``); this test covers circles *within* a layer, which a layers contract allows.
Imports under ``if TYPE_CHECKING:`` never run, so they are left out. Anyone can run the same check:
``python -m pytest tests/test_layers.py``.
"""

from __future__ import annotations

import grimp
import networkx as nx


def _import_graph() -> nx.DiGraph:
    graph = grimp.build_graph("prune_nas", exclude_type_checking_imports=True)
    g = nx.DiGraph()
    for module in graph.modules:
        g.add_node(module)
        for imported in graph.find_modules_directly_imported_by(module):
            g.add_edge(module, imported)
    return g


def test_no_import_circle():
    g = _import_graph()
    circles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    examples = [" -> ".join(next(nx.simple_cycles(g.subgraph(c)))) for c in circles]
    assert not circles, "import circles: " + "; ".join(examples)


def test_the_graph_sees_function_level_imports():
    # design.discover imports the training loop only inside functions: the check must see such edges.
    g = _import_graph()
    assert g.has_edge("prune_nas.design.discover", "prune_nas.training.loop")
