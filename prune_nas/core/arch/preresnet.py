"""CIFAR pre-activation ResNets with bottleneck blocks (PreResNet-110, PreResNet-164), as in Network Slimming.

A block reads the residual stream through BN-ReLU; Network Slimming prunes that BN, which sits on a tensor
shared with the shortcut, so what is pruned is a *channel selection* of the input
(``stage{s}.block{b}.select``), never the producer. The block's inner convs (``.conv1``, ``.conv2``) are
ordinary width groups; the residual stream of each stage (``stage{s}``) is one group. The final BN before the
classifier is a selection too (``head.select``). The selection happens before the BN (equivalent, since BN is
per channel) so a pruned model stores BN parameters for the kept channels only.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn
from torch.nn import functional as F

from prune_nas.core.arch._base import Family, ModelSpec, Op, Slot
from prune_nas.core.arch._layers import ChannelSelect, init_weights

EXPANSION = 4
PLANES = (16, 32, 64)


class PreResNet(Family):
    name = "preresnet"
    block_pruning = True

    def slots(self, spec, blocks):
        out, src = [Slot("stem", 16, "conv", 1)], "stem"
        for s, n in enumerate(blocks, start=1):
            stream = PLANES[s - 1] * EXPANSION
            out.append(Slot(f"stage{s}", stream, "stream", s))
            for b in range(n):
                p = f"stage{s}.block{b}"
                base_in = (16 if s == 1 else stream // 2) if b == 0 else stream
                out += [Slot(f"{p}.select", base_in, "select", s, reads=(src,)),
                        Slot(f"{p}.conv1", PLANES[s - 1], "conv", s),
                        Slot(f"{p}.conv2", PLANES[s - 1], "conv", s)]
                src = f"stage{s}"
            src = f"stage{s}"
        out.append(Slot("head.select", PLANES[-1] * EXPANSION, "select", len(blocks), reads=(src,)))
        return out

    def select_limits(self, spec, blocks, widths):
        limits, cin = {}, widths["stem"]
        for s, n in enumerate(blocks, start=1):
            for b in range(n):
                limits[f"stage{s}.block{b}.select"] = cin
                cin = widths[f"stage{s}"]
            cin = widths[f"stage{s}"]
        limits["head.select"] = cin
        return limits

    def min_input_size(self, spec):
        return 4

    def ops(self, spec, blocks, widths, input_size, in_channels, num_classes):
        hw = input_size
        ops = [Op("stem", "conv", in_channels, widths["stem"], 3, hw, stage=1, out_slot="stem")]
        cin, src = widths["stem"], ("stem",)
        for s, n in enumerate(blocks, start=1):
            stride = 1 if s == 1 else 2
            cout, st_slot = widths[f"stage{s}"], f"stage{s}"
            if n == 0:
                hw = (hw - 1) // stride + 1
                ops.append(Op(f"stage{s}.shortcut", "conv", cin, cout, 1, hw, stage=s, in_slots=src,
                              out_slot=st_slot))
            for b in range(n):
                p = f"stage{s}.block{b}"
                sel, c1, c2 = f"{p}.select", f"{p}.conv1", f"{p}.conv2"
                k, w1, w2 = widths[sel], widths[c1], widths[c2]
                st = stride if b == 0 else 1
                hw_in, hw = hw, (hw - 1) // st + 1
                ops += [Op(f"{p}.bn1", "bn", k, k, out_slot=sel),
                        Op(c1, "conv", k, w1, 1, hw_in, stage=s, in_slots=(sel,), out_slot=c1),
                        Op(f"{p}.bn2", "bn", w1, w1, out_slot=c1),
                        Op(c2, "conv", w1, w2, 3, hw, stage=s, in_slots=(c1,), out_slot=c2),
                        Op(f"{p}.bn3", "bn", w2, w2, out_slot=c2),
                        Op(f"{p}.conv3", "conv", w2, cout, 1, hw, stage=s, in_slots=(c2,), out_slot=st_slot)]
                if b == 0:
                    ops.append(Op(f"{p}.shortcut", "conv", cin, cout, 1, hw, stage=s, in_slots=src,
                                  out_slot=st_slot))
                cin, src = cout, (st_slot,)
            cin, src = cout, (st_slot,)  # a stage with no block still changes the width, through its shortcut
        k = widths["head.select"]
        return ops + [Op("head.bn", "bn", k, k, out_slot="head.select"),
                      Op("fc", "linear", k, num_classes, bias=True, in_slots=("head.select",))]

    def build(self, spec, blocks, widths, input_size, in_channels, num_classes):
        model = nn.Module()
        stem = nn.Conv2d(in_channels, widths["stem"], 3, padding=1, bias=False)
        stages, cin = OrderedDict(), widths["stem"]
        for s, n in enumerate(blocks, start=1):
            stride = 1 if s == 1 else 2
            cout = widths[f"stage{s}"]
            layers = OrderedDict()
            if n == 0:
                layers["shortcut"] = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            for b in range(n):
                p = f"stage{s}.block{b}"
                layers[f"block{b}"] = _PreBottleneck(cin, widths[f"{p}.select"], widths[f"{p}.conv1"],
                                                     widths[f"{p}.conv2"], cout, stride if b == 0 else 1,
                                                     projection=b == 0)
                cin = cout
            cin = cout  # a stage with no block still changes the width, through its shortcut
            stages[f"stage{s}"] = nn.Sequential(layers)
        model = _PreResNetNet(stem, stages, cin, widths["head.select"], num_classes)
        init_weights(model, spec.bn_init)
        return model


class _PreBottleneck(nn.Module):
    def __init__(self, cin, k, w1, w2, cout, stride, projection):
        super().__init__()
        self.select = ChannelSelect(cin, k)
        self.bn1 = nn.BatchNorm2d(k)
        self.conv1 = nn.Conv2d(k, w1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(w1)
        self.conv2 = nn.Conv2d(w1, w2, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(w2)
        self.conv3 = nn.Conv2d(w2, cout, 1, bias=False)
        # As in the reference code, the first block of each stage projects the raw input (before BN).
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if projection else None

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(self.select(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + (x if self.shortcut is None else self.shortcut(x))


class _PreResNetNet(nn.Module):
    def __init__(self, stem, stages, cin, k, num_classes):
        super().__init__()
        self.stem = stem
        for name, stage in stages.items():
            self.add_module(name, stage)
        self.stage_names = list(stages)
        self.head = nn.Module()
        self.head.select = ChannelSelect(cin, k)
        self.head.bn = nn.BatchNorm2d(k)
        self.fc = nn.Linear(k, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        x = F.relu(self.head.bn(self.head.select(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def specs() -> list[ModelSpec]:
    out = []
    for depth in (110, 164):
        n = (depth - 2) // 9
        # PreResNet-164 is the reference's Network Slimming model (BN scale 0.5); PreResNet-110 its
        # weight-level model (bearpaw's, BN scale 1).
        out.append(ModelSpec(f"preresnet{depth}", "preresnet", 10, 32, default_blocks=(n, n, n),
                             summary=f"CIFAR PreResNet-{depth}: pre-activation bottleneck blocks, streams "
                                     "64/128/256", bn_init=0.5 if depth == 164 else 1.0))
    return out
