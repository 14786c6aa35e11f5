"""CIFAR DenseNets: DenseNet-40 (growth 12, no bottleneck, no compression) and DenseNet-BC-100 (bottleneck 4k,
compression 0.5), as in Network Slimming.

Each layer reads the concatenation of all earlier outputs through BN-ReLU. Network Slimming prunes that BN, so
each layer has a *selection* width (``dense{d}.layer{i}.select``: how many channels of the concatenation it
reads) besides its own conv widths (``.conv1`` [, ``.conv2``]: the last one is the layer's growth).
Transitions select (``trans{t}.select``) and have an output width (``trans{t}.conv``); the head selects too.
A selection can never exceed the channels that exist at that point; validation checks it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from prune_nas.core.arch._base import Family, ModelSpec, Op, Slot
from prune_nas.core.arch._layers import ChannelSelect, init_weights


def _n_layers(spec: ModelSpec) -> int:
    depth, bc = spec.config["depth"], spec.config["bottleneck"]
    return (depth - 4) // (6 if bc else 3)


class DenseNet(Family):
    name = "densenet"

    def _plan(self, spec):
        """Yield ('layer'|'trans', prefix, stage) in order."""
        n = _n_layers(spec)
        for d in (1, 2, 3):
            for i in range(n):
                yield "layer", f"dense{d}.layer{i}", d
            if d < 3:
                yield "trans", f"trans{d}", d

    def _conv_names(self, spec):
        return ("conv1", "conv2") if spec.config["bottleneck"] else ("conv1",)

    def slots(self, spec, blocks):
        g = spec.config["growth"]
        c = 2 * g
        out, concat = [Slot("stem", c, "conv", 1)], ["stem"]
        for kind, p, d in self._plan(spec):
            out.append(Slot(f"{p}.select", c, "select", d, reads=tuple(concat)))
            if kind == "layer":
                if spec.config["bottleneck"]:
                    out.append(Slot(f"{p}.conv1", 4 * g, "conv", d))
                last = f"{p}.{self._conv_names(spec)[-1]}"
                out.append(Slot(last, g, "conv", d))
                c += g
                concat.append(last)
            else:
                c = int(c * spec.config["compression"])
                out.append(Slot(f"{p}.conv", c, "conv", d))
                concat = [f"{p}.conv"]
        out.append(Slot("head.select", c, "select", 3, reads=tuple(concat)))
        return out

    def select_limits(self, spec, blocks, widths):
        limits, c = {}, widths["stem"]
        last = self._conv_names(spec)[-1]
        for kind, p, _ in self._plan(spec):
            limits[f"{p}.select"] = c
            c = c + widths[f"{p}.{last}"] if kind == "layer" else widths[f"{p}.conv"]
        limits["head.select"] = c
        return limits

    def min_input_size(self, spec):
        return 4

    def ops(self, spec, blocks, widths, input_size, in_channels, num_classes):
        hw = input_size
        ops = [Op("stem", "conv", in_channels, widths["stem"], 3, hw, stage=1, out_slot="stem")]
        bc = spec.config["bottleneck"]
        for kind, p, d in self._plan(spec):
            sel = f"{p}.select"
            k = widths[sel]
            ops.append(Op(f"{p}.bn1", "bn", k, k, out_slot=sel))
            if kind == "trans":
                c = f"{p}.conv"
                ops.append(Op(c, "conv", k, widths[c], 1, hw, stage=d, in_slots=(sel,), out_slot=c))
                hw //= 2
            elif bc:
                c1, c2 = f"{p}.conv1", f"{p}.conv2"
                w1, w2 = widths[c1], widths[c2]
                ops += [Op(c1, "conv", k, w1, 1, hw, stage=d, in_slots=(sel,), out_slot=c1),
                        Op(f"{p}.bn2", "bn", w1, w1, out_slot=c1),
                        Op(c2, "conv", w1, w2, 3, hw, stage=d, in_slots=(c1,), out_slot=c2)]
            else:
                c1 = f"{p}.conv1"
                ops.append(Op(c1, "conv", k, widths[c1], 3, hw, stage=d, in_slots=(sel,), out_slot=c1))
        k = widths["head.select"]
        return ops + [Op("head.bn", "bn", k, k, out_slot="head.select"),
                      Op("fc", "linear", k, num_classes, bias=True, in_slots=("head.select",))]

    def build(self, spec, blocks, widths, input_size, in_channels, num_classes):
        limits = self.select_limits(spec, None, widths)
        model = _DenseNetNet()
        model.stem = nn.Conv2d(in_channels, widths["stem"], 3, padding=1, bias=False)
        for d in (1, 2, 3):
            block = nn.Module()
            for i in range(_n_layers(spec)):
                p = f"dense{d}.layer{i}"
                convs = [widths[f"{p}.{c}"] for c in self._conv_names(spec)]
                block.add_module(f"layer{i}",
                                 _DenseLayer(limits[f"{p}.select"], widths[f"{p}.select"], convs))
            model.add_module(f"dense{d}", block)
            if d < 3:
                p = f"trans{d}"
                model.add_module(p, _Transition(limits[f"{p}.select"], widths[f"{p}.select"],
                                                widths[f"{p}.conv"]))
        model.head = nn.Module()
        model.head.select = ChannelSelect(limits["head.select"], widths["head.select"])
        model.head.bn = nn.BatchNorm2d(widths["head.select"])
        model.fc = nn.Linear(widths["head.select"], num_classes)
        init_weights(model, spec.bn_init)
        return model


class _DenseLayer(nn.Module):
    def __init__(self, cin, k, convs):
        super().__init__()
        self.select = ChannelSelect(cin, k)
        self.bn1 = nn.BatchNorm2d(k)
        if len(convs) == 2:
            self.conv1 = nn.Conv2d(k, convs[0], 1, bias=False)
            self.bn2 = nn.BatchNorm2d(convs[0])
            self.conv2 = nn.Conv2d(convs[0], convs[1], 3, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(k, convs[0], 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(self.select(x))))
        if hasattr(self, "conv2"):
            out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], 1)


class _Transition(nn.Module):
    def __init__(self, cin, k, cout):
        super().__init__()
        self.select = ChannelSelect(cin, k)
        self.bn1 = nn.BatchNorm2d(k)
        self.conv = nn.Conv2d(k, cout, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.bn1(self.select(x)))), 2)


class _DenseNetNet(nn.Module):
    def forward(self, x):
        x = self.stem(x)
        for d in (1, 2, 3):
            block = getattr(self, f"dense{d}")
            for layer in block.children():
                x = layer(x)
            if d < 3:
                x = getattr(self, f"trans{d}")(x)
        x = F.relu(self.head.bn(self.head.select(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def specs() -> list[ModelSpec]:
    return [
        ModelSpec("densenet40", "densenet", 10, 32,
                  config={"depth": 40, "growth": 12, "bottleneck": False, "compression": 1.0},
                  summary="CIFAR DenseNet-40, growth 12, no bottleneck or compression",
                  bn_init=0.5),  # the reference's slimming model; DenseNet-BC-100 (weight-level) has 1
        ModelSpec("densenet-bc100", "densenet", 10, 32,
                  config={"depth": 100, "growth": 12, "bottleneck": True, "compression": 0.5},
                  summary="CIFAR DenseNet-BC-100, growth 12, bottleneck 4k, compression 0.5"),
    ]
