"""Channel-coupling graph: which prunable channel dimensions must share one width.

Nodes are the slots a family declares (conv outputs, residual streams, channel selections); an edge joins two
slots whose tensors are added together, so their widths must agree. Each connected component is one *width
group*, the unit a genome gives a width to. A genome that assigns one width per group is therefore valid by
construction: no residual add can see two different widths.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import networkx as nx

from prune_nas.core.arch import get_family, get_spec
from prune_nas.core.arch._base import Slot


@dataclass(frozen=True)
class WidthGroups:
    """The width groups of one base model at one block count, in layout order."""

    names: tuple[str, ...]
    members: dict  # group name -> tuple of slot names
    slot_group: dict  # slot name -> group name
    slots: dict  # slot name -> Slot

    def base_widths(self) -> dict[str, int]:
        return {g: self.slots[self.members[g][0]].base_width for g in self.names}

    def kind(self, group: str) -> str:
        kinds = {self.slots[s].kind for s in self.members[group]}
        return "stream" if "stream" in kinds else kinds.pop()

    def stage(self, group: str) -> int:
        return self.slots[self.members[group][-1]].stage

    @property
    def n_stages(self) -> int:
        """The resolution stages, numbered from 1: the last group's stage is the highest."""
        return max(self.stage(g) for g in self.names)

    def expand(self, widths) -> dict[str, int]:
        """Per-slot widths from per-group widths."""
        return {slot: widths[group] for slot, group in self.slot_group.items()}


def coupling_graph(model: str, blocks: tuple[int, ...] | None) -> nx.Graph:
    spec = get_spec(model)
    family = get_family(spec.family)
    graph = nx.Graph()
    for order, slot in enumerate(family.slots(spec, blocks)):
        graph.add_node(slot.name, slot=slot, order=order)
    graph.add_edges_from(family.couplings(spec, blocks))
    return graph


@lru_cache(maxsize=512)
def width_groups(model: str, blocks: tuple[int, ...] | None) -> WidthGroups:
    graph = coupling_graph(model, blocks)
    slots: dict[str, Slot] = {n: d["slot"] for n, d in graph.nodes(data=True)}
    components = []
    for comp in nx.connected_components(graph):
        ordered = sorted(comp, key=lambda n: graph.nodes[n]["order"])
        # A residual stream names its group ("stage2"), otherwise the first slot in layout order does.
        streams = [n for n in ordered if slots[n].kind == "stream"]
        name = streams[0] if streams else ordered[0]
        components.append((min(graph.nodes[n]["order"] for n in comp), name, tuple(ordered)))
    components.sort()
    members = {name: ordered for _, name, ordered in components}
    slot_group = {s: name for name, ordered in members.items() for s in ordered}
    return WidthGroups(tuple(members), members, slot_group, slots)
