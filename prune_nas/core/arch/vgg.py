"""VGG, with or without BatchNorm: CIFAR (4 max-pools, global average pool) and ImageNet (5 max-pools).

Heads: ``linear`` (Network Slimming: one Linear), ``mlp`` (Li et al.'s L1-norm paper: Linear(c, 512), BN1d,
ReLU, Linear(512, classes)), ``fc`` (ImageNet: 7x7 pool, 4096-4096 FC with dropout), ``fc-bn`` (the reference
Network Slimming ImageNet VGG: 7x7 pool, Linear-BN1d-ReLU twice at 4096, no dropout), ``gap`` (ThiNet-GAP:
global average pool, one Linear). Every conv is its own width group; so is each hidden layer of an ``fc-bn``
head (``fc1``, ``fc2``, in the stage after the last conv stage), whose BN1d scales Network Slimming prunes
along with the convs'. ``bn: False`` (the reference's ThiNet and regression-pruning VGG-16) drops every BN and
gives the convs biases.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from prune_nas.core.arch._base import Family, ModelSpec, Op, Slot
from prune_nas.core.arch._layers import init_weights

CFGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}
MLP_HIDDEN = 512
FC_HIDDEN = 4096


def _head_hidden(spec: ModelSpec) -> list[str]:
    """The head's hidden width groups (only an ``fc-bn`` head has any)."""
    return ["fc1", "fc2"] if spec.config["head"] == "fc-bn" else []


def _layers(spec: ModelSpec):
    """Yield (slot name, base width, stage) per conv and "M" per pool, in order."""
    cfg = list(CFGS[spec.config["depth"]])
    if spec.config.get("final_pool"):
        cfg.append("M")
    stage, i = 1, 0
    for item in cfg:
        if item == "M":
            stage += 1
            yield "M"
        else:
            i += 1
            yield f"conv{i}", item, stage


class VGG(Family):
    name = "vgg"

    def slots(self, spec, blocks):
        convs = [Slot(n, w, "conv", s) for n, w, s in (x for x in _layers(spec) if x != "M")]
        head_stage = convs[-1].stage + 1
        return convs + [Slot(n, FC_HIDDEN, "conv", head_stage) for n in _head_hidden(spec)]

    def min_input_size(self, spec):
        return 2 ** sum(1 for x in _layers(spec) if x == "M")

    def ops(self, spec, blocks, widths, input_size, in_channels, num_classes):
        ops, cin, hw, src = [], in_channels, input_size, ()
        bn = spec.config.get("bn", True)
        for item in _layers(spec):
            if item == "M":
                hw //= 2
                continue
            name, _, stage = item
            w = widths[name]
            ops.append(Op(f"features.{name}", "conv", cin, w, 3, hw, bias=not bn, stage=stage, in_slots=src,
                          out_slot=name))
            if bn:
                ops.append(Op(f"features.bn{name[4:]}", "bn", w, w, out_slot=name))
            cin, src = w, (name,)
        head = spec.config["head"]
        if head in ("linear", "gap"):
            ops.append(Op("classifier", "linear", cin, num_classes, bias=True, in_slots=src))
        elif head == "mlp":
            ops += [Op("classifier.0", "linear", cin, MLP_HIDDEN, bias=True, in_slots=src),
                    Op("classifier.1", "bn", MLP_HIDDEN, MLP_HIDDEN),
                    Op("classifier.3", "linear", MLP_HIDDEN, num_classes, bias=True)]
        elif head == "fc-bn":
            w1, w2 = widths["fc1"], widths["fc2"]
            ops += [Op("classifier.0", "linear", cin * 49, w1, bias=True, in_slots=src, out_slot="fc1"),
                    Op("classifier.1", "bn", w1, w1, out_slot="fc1"),
                    Op("classifier.3", "linear", w1, w2, bias=True, in_slots=("fc1",), out_slot="fc2"),
                    Op("classifier.4", "bn", w2, w2, out_slot="fc2"),
                    Op("classifier.6", "linear", w2, num_classes, bias=True, in_slots=("fc2",))]
        else:  # fc
            ops += [Op("classifier.0", "linear", cin * 49, FC_HIDDEN, bias=True, in_slots=src),
                    Op("classifier.3", "linear", FC_HIDDEN, FC_HIDDEN, bias=True),
                    Op("classifier.6", "linear", FC_HIDDEN, num_classes, bias=True)]
        return ops

    def build(self, spec, blocks, widths, input_size, in_channels, num_classes):
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        cin, pools = in_channels, 0
        bn = spec.config.get("bn", True)
        for item in _layers(spec):
            if item == "M":
                pools += 1
                layers[f"pool{pools}"] = nn.MaxPool2d(2)
                continue
            name, _, _ = item
            w, idx = widths[name], name[4:]
            layers[name] = nn.Conv2d(cin, w, 3, padding=1, bias=not bn)
            if bn:
                layers[f"bn{idx}"] = nn.BatchNorm2d(w)
            layers[f"relu{idx}"] = nn.ReLU(inplace=True)
            cin = w
        head = spec.config["head"]
        model = _VGGNet(nn.Sequential(layers), _head(head, cin, num_classes, widths),
                        7 if head in ("fc", "fc-bn") else 1)
        init_weights(model, spec.bn_init)
        return model


def _head(kind: str, cin: int, num_classes: int, widths) -> nn.Module:
    if kind in ("linear", "gap"):
        return nn.Linear(cin, num_classes)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(cin, MLP_HIDDEN), nn.BatchNorm1d(MLP_HIDDEN), nn.ReLU(inplace=True),
                             nn.Linear(MLP_HIDDEN, num_classes))
    if kind == "fc-bn":
        w1, w2 = widths["fc1"], widths["fc2"]
        return nn.Sequential(nn.Linear(cin * 49, w1), nn.BatchNorm1d(w1), nn.ReLU(inplace=True),
                             nn.Linear(w1, w2), nn.BatchNorm1d(w2), nn.ReLU(inplace=True),
                             nn.Linear(w2, num_classes))
    return nn.Sequential(nn.Linear(cin * 49, FC_HIDDEN), nn.ReLU(inplace=True), nn.Dropout(),
                         nn.Linear(FC_HIDDEN, FC_HIDDEN), nn.ReLU(inplace=True), nn.Dropout(),
                         nn.Linear(FC_HIDDEN, num_classes))


class _VGGNet(nn.Module):
    def __init__(self, features: nn.Sequential, classifier: nn.Module, pool: int):
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.pool = nn.AdaptiveAvgPool2d(pool)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def specs() -> list[ModelSpec]:
    # BN scale 0.5 where the reference code has it: its Network Slimming VGGs (CIFAR and ImageNet VGG-11) and
    # its L1-norm VGG-16 (see ModelSpec.bn_init).
    out = []
    for depth in (11, 13, 16, 19):
        out.append(ModelSpec(f"vgg{depth}", "vgg", 10, 32, config={"depth": depth, "head": "linear"},
                             summary=f"CIFAR VGG-{depth}-BN, global pool + one Linear (Network Slimming)",
                             bn_init=0.5))
        out.append(ModelSpec(f"vgg{depth}-l1", "vgg", 10, 32, config={"depth": depth, "head": "mlp"},
                             summary=f"CIFAR VGG-{depth}-BN with the Linear-BN1d-ReLU-Linear head of Li et "
                                     "al.",
                             bn_init=0.5))
    out.append(ModelSpec("vgg11-imagenet", "vgg", 1000, 224,
                         config={"depth": 11, "head": "fc-bn", "final_pool": True},
                         summary="ImageNet VGG-11-BN (Network Slimming): 4096-4096 FC head with BN1d, no "
                                 "dropout",
                         bn_init=0.5))
    out.append(ModelSpec("vgg16-imagenet", "vgg", 1000, 224,
                         config={"depth": 16, "head": "fc", "final_pool": True},
                         summary="ImageNet VGG-16-BN, 4096-4096 FC head with dropout"))
    out.append(ModelSpec("vgg16-nobn-imagenet", "vgg", 1000, 224,
                         config={"depth": 16, "head": "fc", "final_pool": True, "bn": False},
                         summary="ImageNet VGG-16 without BN (conv biases), 4096-4096 FC head with dropout "
                                 "(the ThiNet and regression-pruning base)"))
    out.append(ModelSpec("vgg16-nobn-imagenet-gap", "vgg", 1000, 224,
                         config={"depth": 16, "head": "gap", "bn": False},
                         summary="ImageNet VGG-16 without BN, without the last pool and FC layers: global "
                                 "pool + one Linear (ThiNet-GAP/Tiny)"))
    return out
