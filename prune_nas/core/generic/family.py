"""The ``generic`` family: the Family interface (slots, ops, build) served from a model's analysis, so that
validation, geometry, masks and the builder treat a generic genome like a built-in one.

Its ``ModelSpec`` is made per genome (:func:`generic_spec`): the reference as ``name``, the factory's kwargs
and the fixed layers in ``config``. Each width group is one slot of kind ``stream`` or ``conv``; a width may
not exceed the base model's (``select_limits``), and there are no blocks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from prune_nas.core.arch._base import Family, ModelSpec, Op, Slot
from prune_nas.core.generic.analysis import analysis_of, param_shapes


def generic_spec(model: str, model_args: Mapping[str, Any] | None, num_classes: int, input_size: int,
                 in_channels: int) -> ModelSpec:
    args = model_args or {}
    return ModelSpec(name=model, family=GenericFamily.name, num_classes=num_classes, input_size=input_size,
                     in_channels=in_channels,
                     config={"kwargs": dict(args.get("kwargs", {})), "fixed": list(args.get("fixed", ()))},
                     summary=f"{model} (analysed with Torch-Pruning)")


def _with_stages(ops: list[Op], group_stage: Mapping[str, int]) -> list[Op]:
    """Convs numbered by stage as their groups are (per-stage sparsity and kernel maps read it): a conv's
    stage is the stage of the group it writes; a conv that writes none (a fixed layer, a depthwise conv)
    takes the stage of the groups written at its output resolution, or at the nearest one."""
    at_side: dict[int, int] = {}
    for op in ops:
        if op.kind == "conv" and op.out_slot in group_stage:
            at_side.setdefault(op.hw, group_stage[op.out_slot])

    def stage_of(op: Op) -> int:
        if op.out_slot in group_stage:
            return group_stage[op.out_slot]
        if not at_side:
            return 1
        return at_side[min(at_side, key=lambda hw: (abs(math.log(hw / op.hw)), hw))]

    return [dataclasses.replace(op, stage=stage_of(op)) if op.kind == "conv" else op for op in ops]


class GenericFamily(Family):
    name = "generic"
    block_pruning = False

    def slots(self, spec: ModelSpec, blocks) -> list[Slot]:
        return [Slot(g.name, g.width, g.kind, g.stage) for g in analysis_of(spec).groups]

    def select_limits(self, spec: ModelSpec, blocks, widths: Mapping[str, int]) -> dict[str, int]:
        # Channels can only be removed: the base width bounds every group.
        return {g.name: g.width for g in analysis_of(spec).groups}

    def ops(self, spec: ModelSpec, blocks, widths: Mapping[str, int], input_size: int, in_channels: int,
            num_classes: int) -> list[Op]:
        """Conv (square 2-D kernels), linear and BatchNorm layers at ``widths``; a conv's ``cin`` is per
        group of its ``groups`` (1 for a depthwise conv), so ``weight_count`` is its weight's size."""
        analysis = analysis_of(spec)
        shapes = param_shapes(analysis, widths)
        writer = {w: g.name for g in analysis.groups for w in g.writers}
        norm = {n: g.name for g in analysis.groups for n in g.norms}
        ops = []
        for p in analysis.params:
            layer = p.name[:-len(".weight")] if p.name.endswith(".weight") else None
            shape = shapes[p.name]
            bias = f"{layer}.bias" in shapes
            if p.layer == "conv" and len(shape) == 4 and shape[2] == shape[3]:
                ops.append(Op(layer, "conv", shape[1], shape[0], shape[2], math.isqrt(p.positions), bias,
                              out_slot=writer.get(layer)))
            elif p.layer == "linear":
                ops.append(Op(layer, "linear", shape[1], shape[0], 1, 1, bias, out_slot=writer.get(layer)))
            elif layer in norm:
                ops.append(Op(layer, "bn", shape[0], shape[0], out_slot=norm[layer]))
        return _with_stages(ops, {g.name: g.stage for g in analysis.groups})

    def build(self, spec: ModelSpec, blocks, widths: Mapping[str, int], input_size: int, in_channels: int,
              num_classes: int):
        from prune_nas.core.generic.build import narrowed

        return narrowed(spec, widths)
