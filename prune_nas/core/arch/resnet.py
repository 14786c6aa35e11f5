"""Post-activation ResNets: CIFAR ResNet-20/32/56/110 (basic blocks, option-A shortcuts: 2x2 average pooling
and zero-padding) and ImageNet ResNet-34 (basic) / ResNet-50 (bottleneck, stride on the 3x3 conv),
projection shortcuts.

Width groups: the residual stream of each stage (``stage{s}``, coupled with the stem when the first block's
shortcut is an identity), and each block's inner convs (``stage{s}.block{b}.conv1`` [, ``.conv2``]).

Kept blocks per stage may be fewer than the base (Sparse Structure Selection). Blocks are renumbered from 0.
A stage whose first block lost its residual branch keeps that block's shortcut (``stage{s}.shortcut``:
average pooling + zero-padding on CIFAR, the 1x1 projection conv + BN on ImageNet), which does the stage's
down-sampling and widening, followed by a ReLU (what a post-activation block with a zero branch computes); its
remaining blocks are identity blocks at the stage's resolution, as in the reference code. That is always the
case for a stage left with no block, and for a stage listed in the genome's ``shortcut_entries``; otherwise
block 0 is the stage's original first block.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from prune_nas.core.arch._base import Family, ModelSpec, Op, Slot
from prune_nas.core.arch._layers import init_weights


def _out(hw: int, k: int, stride: int) -> int:
    return (hw + 2 * (k // 2) - k) // stride + 1


class ResNet(Family):
    name = "resnet"
    block_pruning = True

    # ---- description -------------------------------------------------------------------------------------
    def _stage_base(self, spec: ModelSpec, s: int) -> int:
        return spec.config["planes"][s - 1] * spec.config["expansion"]

    def _stem_base(self, spec: ModelSpec) -> int:
        return spec.config["planes"][0] if spec.config["stem"] == "cifar" else 64

    def _identity_entry(self, spec: ModelSpec, s: int) -> bool:
        """Whether the first block of stage s has an identity shortcut in the base model."""
        base_in = self._stem_base(spec) if s == 1 else self._stage_base(spec, s - 1)
        return s == 1 and base_in == self._stage_base(spec, s)

    def _inner(self, spec: ModelSpec) -> tuple[str, ...]:
        return ("conv1",) if spec.config["block"] == "basic" else ("conv1", "conv2")

    def slots(self, spec, blocks):
        out = [Slot("stem", self._stem_base(spec), "conv", 1)]
        for s, n in enumerate(blocks, start=1):
            out.append(Slot(f"stage{s}", self._stage_base(spec, s), "stream", s))
            for b in range(n):
                out += [Slot(f"stage{s}.block{b}.{c}", spec.config["planes"][s - 1], "conv", s)
                        for c in self._inner(spec)]
        return out

    def couplings(self, spec, blocks):
        return [("stem" if s == 1 else f"stage{s - 1}", f"stage{s}")
                for s in range(1, len(blocks) + 1) if self._identity_entry(spec, s)]

    def min_input_size(self, spec):
        return (4 if spec.config["stem"] == "imagenet" else 1) * 2 ** (len(spec.config["planes"]) - 1)

    def shortcut_entry_problem(self, spec, blocks, stage):
        if self._identity_entry(spec, stage):
            return (f"stage {stage} of {spec.name} opens with an identity shortcut: without its first "
                    "block's branch it is just fewer blocks")
        if blocks[stage - 1] == 0:
            return f"stage {stage} has no block: it opens with its shortcut anyway (do not list it)"
        if blocks[stage - 1] >= spec.default_blocks[stage - 1]:
            return f"stage {stage} keeps all {blocks[stage - 1]} blocks, so none was removed"
        return None

    def _entry_is_shortcut(self, blocks, s: int, shortcut_entries) -> bool:
        return blocks[s - 1] == 0 or s in shortcut_entries

    def ops(self, spec, blocks, widths, input_size, in_channels, num_classes, shortcut_entries=()):
        cfg = spec.config
        ops: list[Op] = []
        if cfg["stem"] == "cifar":
            hw = input_size
            ops += [Op("stem.conv", "conv", in_channels, widths["stem"], 3, hw, stage=1, out_slot="stem")]
        else:
            hw = _out(input_size, 7, 2)
            ops += [Op("stem.conv", "conv", in_channels, widths["stem"], 7, hw, stage=1, out_slot="stem")]
            hw = _out(hw, 3, 2)
        ops.append(Op("stem.bn", "bn", widths["stem"], widths["stem"], out_slot="stem"))
        cin, src = widths["stem"], ("stem",)
        for s, n in enumerate(blocks, start=1):
            stride = 1 if s == 1 else 2
            cout, st_slot = widths[f"stage{s}"], f"stage{s}"
            entry = self._entry_is_shortcut(blocks, s, shortcut_entries)
            if entry:
                hw = _out(hw, 1, stride)
                if cfg["shortcut"] == "projection" and not self._identity_entry(spec, s):
                    ops += [Op(f"stage{s}.shortcut.0", "conv", cin, cout, 1, hw, stage=s, in_slots=src,
                               out_slot=st_slot),
                            Op(f"stage{s}.shortcut.1", "bn", cout, cout, out_slot=st_slot)]
                cin, src = cout, (st_slot,)
            for b in range(n):
                p = f"stage{s}.block{b}"
                st = stride if b == 0 and not entry else 1
                hw_in, hw = hw, _out(hw, 3, st)
                c1, c2 = f"{p}.conv1", f"{p}.conv2"
                if cfg["block"] == "basic":
                    w1 = widths[c1]
                    ops += [Op(c1, "conv", cin, w1, 3, hw, stage=s, in_slots=src, out_slot=c1),
                            Op(f"{p}.bn1", "bn", w1, w1, out_slot=c1),
                            Op(c2, "conv", w1, cout, 3, hw, stage=s, in_slots=(c1,), out_slot=st_slot),
                            Op(f"{p}.bn2", "bn", cout, cout, out_slot=st_slot)]
                else:
                    w1, w2 = widths[c1], widths[c2]
                    ops += [Op(c1, "conv", cin, w1, 1, hw_in, stage=s, in_slots=src, out_slot=c1),
                            Op(f"{p}.bn1", "bn", w1, w1, out_slot=c1),
                            Op(c2, "conv", w1, w2, 3, hw, stage=s, in_slots=(c1,), out_slot=c2),
                            Op(f"{p}.bn2", "bn", w2, w2, out_slot=c2),
                            Op(f"{p}.conv3", "conv", w2, cout, 1, hw, stage=s, in_slots=(c2,),
                               out_slot=st_slot),
                            Op(f"{p}.bn3", "bn", cout, cout, out_slot=st_slot)]
                projection = cfg["shortcut"] == "projection" and not self._identity_entry(spec, s)
                if b == 0 and not entry and projection:
                    ops += [Op(f"{p}.shortcut.0", "conv", cin, cout, 1, hw, stage=s, in_slots=src,
                               out_slot=st_slot),
                            Op(f"{p}.shortcut.1", "bn", cout, cout, out_slot=st_slot)]
                cin, src = cout, (st_slot,)
            # A stage with no block still leaves its stream at the stage's width (via its shortcut).
            cin, src = cout, (st_slot,)
        ops.append(Op("fc", "linear", cin, num_classes, bias=True, in_slots=src))
        return ops

    # ---- module ------------------------------------------------------------------------------------------
    def build(self, spec, blocks, widths, input_size, in_channels, num_classes, shortcut_entries=()):
        cfg = spec.config
        stem = OrderedDict()
        if cfg["stem"] == "cifar":
            stem["conv"] = nn.Conv2d(in_channels, widths["stem"], 3, padding=1, bias=False)
        else:
            stem["conv"] = nn.Conv2d(in_channels, widths["stem"], 7, stride=2, padding=3, bias=False)
        stem["bn"] = nn.BatchNorm2d(widths["stem"])
        stem["relu"] = nn.ReLU(inplace=True)
        if cfg["stem"] == "imagenet":
            stem["pool"] = nn.MaxPool2d(3, stride=2, padding=1)
        stages = OrderedDict()
        cin = widths["stem"]
        for s, n in enumerate(blocks, start=1):
            stride = 1 if s == 1 else 2
            cout = widths[f"stage{s}"]
            identity = self._identity_entry(spec, s)
            layers = OrderedDict()
            entry = self._entry_is_shortcut(blocks, s, shortcut_entries)
            if entry:
                # What a block whose branch is zero computes: relu(shortcut(x)).
                layers["shortcut"] = _shortcut(cfg["shortcut"], identity, cin, cout, stride)
                layers["relu"] = nn.ReLU(inplace=True)
                cin = cout
            for b in range(n):
                p = f"stage{s}.block{b}"
                inner = [widths[f"{p}.{c}"] for c in self._inner(spec)]
                first = b == 0 and not entry
                sc = _shortcut(cfg["shortcut"], identity, cin, cout, stride) if first else nn.Identity()
                block_cls = _Basic if cfg["block"] == "basic" else _Bottleneck
                layers[f"block{b}"] = block_cls(cin, inner, cout, stride if first else 1, sc)
                cin = cout
            cin = cout  # a stage with no block still changes the width, through its shortcut
            stages[f"stage{s}"] = nn.Sequential(layers)
        model = _ResNetNet(nn.Sequential(stem), stages, nn.Linear(cin, num_classes))
        init_weights(model, spec.bn_init)
        return model


def _shortcut(kind: str, identity: bool, cin: int, cout: int, stride: int) -> nn.Module:
    if identity:
        return nn.Identity()
    if kind == "projection":
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
    return PadShortcut(cin, cout, stride)


class PadShortcut(nn.Module):
    """Option-A shortcut, as the reference code's CIFAR ResNet: 2x2 average pooling (when the stage halves the
    resolution), then zero-padding of the channels (or dropping the last ones if the stage narrowed).

    Unlike the reference (``Variable(torch.cat([x.data, zeros]))``, which detaches the shortcut), gradients
    flow through it. ``ceil_mode`` keeps the pooled side equal to the strided conv's, ``ceil(hw / 2)``, at
    odd sizes (the reference only runs at 32 px, where both are the same)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride

    def forward(self, x):
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
        if self.cout > self.cin:
            return F.pad(x, (0, 0, 0, 0, 0, self.cout - self.cin))
        return x[:, : self.cout]


class _Basic(nn.Module):
    def __init__(self, cin, inner, cout, stride, shortcut):
        super().__init__()
        (w1,) = inner
        self.conv1 = nn.Conv2d(cin, w1, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.conv2 = nn.Conv2d(w1, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = shortcut

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x), inplace=True)


class _Bottleneck(nn.Module):
    def __init__(self, cin, inner, cout, stride, shortcut):
        super().__init__()
        w1, w2 = inner
        self.conv1 = nn.Conv2d(cin, w1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.conv2 = nn.Conv2d(w1, w2, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(w2)
        self.conv3 = nn.Conv2d(w2, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = shortcut

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x), inplace=True)


class _ResNetNet(nn.Module):
    def __init__(self, stem: nn.Module, stages: OrderedDict, fc: nn.Linear):
        super().__init__()
        self.stem = stem
        for name, stage in stages.items():
            self.add_module(name, stage)
        self.stage_names = list(stages)
        self.fc = fc

    def forward(self, x):
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def specs() -> list[ModelSpec]:
    out = []
    for depth in (20, 32, 56, 110):
        n = (depth - 2) // 6
        out.append(ModelSpec(f"resnet{depth}", "resnet", 10, 32, default_blocks=(n, n, n),
                             config={"block": "basic", "planes": (16, 32, 64), "expansion": 1,
                                     "stem": "cifar",
                                     "shortcut": "pad"},
                             summary=f"CIFAR ResNet-{depth}: basic blocks, 3 stages 16/32/64, zero-pad "
                                     "shortcuts"))
    out.append(ModelSpec("resnet34", "resnet", 1000, 224, default_blocks=(3, 4, 6, 3),
                         config={"block": "basic", "planes": (64, 128, 256, 512), "expansion": 1,
                                 "stem": "imagenet", "shortcut": "projection"},
                         summary="ImageNet ResNet-34: basic blocks [3, 4, 6, 3], projection shortcuts"))
    out.append(ModelSpec("resnet50", "resnet", 1000, 224, default_blocks=(3, 4, 6, 3),
                         config={"block": "bottleneck", "planes": (64, 128, 256, 512), "expansion": 4,
                                 "stem": "imagenet", "shortcut": "projection"},
                         summary="ImageNet ResNet-50: bottleneck blocks [3, 4, 6, 3] "
                                 "(stride on the 3x3 conv)"))
    return out
