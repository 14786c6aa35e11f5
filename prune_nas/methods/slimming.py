"""Network Slimming (Liu et al., ICCV 2017): L1 on BatchNorm scales during training, then one global
threshold.

Training: every *prunable* BN scale gamma gets ``s * sign(gamma)`` added to its gradient after backward.
The reference code's ``s`` is ``1e-4`` for CIFAR VGG and ``1e-5`` for ResNet, PreResNet and DenseNet, on the
paper's CIFAR schedule, and ``1e-5`` for ImageNet VGG-11 on the ImageNet schedule (90 epochs of 5005 steps,
1,281,167 images in batches of 256, lr divided by 10 every 30: a sum of lr of 16666.65). The CIFAR schedule:
160 epochs of 782 steps (50,000 images, batch 64) at lr 0.1 / 0.01 / 0.001 for 50 / 25 / 25% of them, a sum
of lr over the steps of 6600.08. A shorter schedule with that ``s`` barely moves the scales (5 epochs
of the bundled digits are 115 steps, a sum of lr of 4.9: every |gamma| stays near 1, and a 50% cut removes
channels as large as the ones it keeps). So, unless ``s`` is given, :func:`schedule_s` scales the
reference's value by ``R ** S_EXPONENT``, ``R`` = the reference schedule's sum of lr / this schedule's
(``protocol``, steps per epoch of the data): exactly the reference's ``s`` on its schedule, larger on shorter
ones.

``S_EXPONENT = 1`` would keep the total L1 push ``s * sum(lr)`` equal to the paper's. It overshoots on short
schedules: the penalty outruns learning and drives every scale to zero. ``S_EXPONENT = 0.8`` was calibrated on
the embedded default (VGG-11 x0.25, digits at 16 px, 23 steps an epoch, seed 0; "zero": |gamma| < 0.01;
"kept": test top-1 of the 50%-pruned model with its inherited weights once BN statistics are re-estimated on
the training data, no weight changed; "FT": after 5 fine-tuning epochs at lr 0.001):

====== ======= ========================================== ==============================================
epochs sum(lr) S_EXPONENT = 1                             S_EXPONENT = 0.8
====== ======= ========================================== ==============================================
5      4.88    s 0.14: large 10%, every scale zero        s 0.032: large 34%, 41% zero, FT 41%
10     12.0    s 0.055: large 10%, every scale zero       s 0.0155: large 93%, 54% zero, kept 94%, FT 96%
20     24.3    s 0.027: large 18%, 91% zero               s 0.0089: large 97%, 60% zero, kept 97%, FT 97%
40     48.5    s 0.0136: large 98%, 84% zero, kept 96%    s 0.0051: large 99%, 60% zero, kept 98%, FT 99%
====== ======= ========================================== ==============================================

With the paper's 1e-4 every |gamma| stays near 1 (10% quantile 0.94 at 5 epochs, 0.84 at 20) and the
50%-pruned model is near chance (kept 24% at 5 epochs, 36% at 10; FT 34% and 72%). No s works at 5 epochs
(0.02: no scale near zero, FT 80%; 0.025: the large model drops to 71%): Network Slimming needs about 10
digits epochs or more, and the derivation says so below a sum of lr of ``SHORTEST_LR_SUM``. Without
re-estimated BN statistics the inherited model is far worse (10% at 10 epochs, 66% at 20): a removed channel
still fed its next layer the constant ``relu(beta)``, which that layer's running mean includes; fine-tuning
(train-mode BN) absorbs it at once. For ResNet-20 on digits (20 epochs) the rule gives s = 8.9e-4, which
zeroes no scale (a 50% cut still fine-tunes to 99%); the VGG value 0.0089 zeroes 66%. The discover pipeline
records the effective s and its derivation in the genome's provenance (``pruned_from.large_model.training``)
and notes; an explicit ``s`` is used as given.

Pruning: ONE threshold over the |gamma| of all prunable BNs together, the ``ratio`` quantile with numpy's
``"lower"`` convention: ``np.quantile(|gamma|, ratio, method="lower")``, i.e. the value at index
``floor((N - 1) * ratio)`` of the N sorted scales. A channel is kept when ``|gamma| > threshold``, so with
distinct scales exactly ``floor((N - 1) * ratio) + 1`` channels go (the reference code takes the value at
``int(N * ratio)``, one channel more). A group left with no channel keeps its largest-|gamma| channel, and the
result says so in ``notes``.

Which BNs are prunable (the penalty and the threshold see the same set): a BN whose channels are a width
group of kind ``conv`` or ``select``, never one of kind ``stream``. Per family:

* VGG: every conv's BN (``features.bn{i}``), and the BN1d of each hidden layer of the ImageNet VGG-11's
  4096-4096 head (``classifier.1``, ``classifier.4``), under the same global threshold as the reference; not
  the BN1d of the L1-norm paper's MLP head (no width group: that head is not pruned).
* ResNet (post-activation): the BNs of the inner convs (``bn1``; ``bn1``, ``bn2`` in bottlenecks) and the stem
  BN where the stem is its own group (ResNet-50); never ``bn2``/``bn3`` or shortcut BNs, which write into the
  residual stream.
* PreResNet: each block's input BN ``bn1`` (a channel *selection* of the residual stream, see
  ``arch/preresnet.py``), the inner ``bn2``, ``bn3``, and the final ``head.bn`` (a selection too).
* DenseNet: each layer's and transition's input BN ``bn1`` (selections of the concatenation), BC's ``bn2``,
  and ``head.bn``.

A group normalised by more than one BN would add their |gamma| (none of the built-in families has one).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from prune_nas.methods._base import Method, Param, PruneResult, check_ratio, register
from prune_nas.methods.surgery import bn_ops, channel_ids, shrink, state_of

S_DEFAULT = {"vgg": 1e-4}  # the reference's s on CIFAR, for the paper's CIFAR schedule
S_OTHER = 1e-5
S_IMAGENET = 1e-5  # the reference's s for ImageNet VGG-11 (its README: --s 0.00001), on the ImageNet schedule
PAPER_EPOCHS, PAPER_STEPS_PER_EPOCH = 160, 782  # CIFAR: 50,000 images in batches of 64, the last one partial
IMAGENET_EPOCHS, IMAGENET_STEPS_PER_EPOCH = 90, 5005  # 1,281,167 images in batches of 256
S_EXPONENT = 0.8  # s grows as (paper's sum of lr / the schedule's) ** S_EXPONENT; see the module doc
# the shortest schedule the rule keeps the large model on: 10 digits epochs (sum 12.03)
SHORTEST_LR_SUM = 12.0


def default_s(family: str, imagenet: bool = False) -> float:
    """The reference code's s for a family, on CIFAR or (``imagenet``) on ImageNet, for its own schedule."""
    return S_IMAGENET if imagenet else S_DEFAULT.get(family, S_OTHER)


def lr_sum(protocol, steps_per_epoch: int) -> float:
    """The sum of the learning rate over every SGD step of ``protocol`` (``steps_per_epoch`` steps an
    epoch)."""
    return float(steps_per_epoch) * sum(protocol.lr_at(e) for e in range(protocol.epochs))


def paper_lr_sum(imagenet: bool = False) -> float:
    """The reference schedule's sum of lr. CIFAR: 160 epochs x 782 steps at 0.1 / 0.01 / 0.001 for 50 / 25 /
    25% = 6600.08. ImageNet: 90 epochs x 5005 steps, a third at each = 16666.65."""
    from prune_nas.training.protocol import Protocol

    if imagenet:
        return lr_sum(Protocol.imagenet(epochs=IMAGENET_EPOCHS), IMAGENET_STEPS_PER_EPOCH)
    return lr_sum(Protocol.cifar(epochs=PAPER_EPOCHS), PAPER_STEPS_PER_EPOCH)


def schedule_s(family: str, s: float | None = None, protocol=None, steps_per_epoch: int | None = None,
               imagenet: bool = False) -> dict:
    """The s slimming trains with, and how it was derived: ``{"s", "rule", ...}``.

    ``s`` given: used as given (``rule: "given"``). Else, with the schedule (``protocol`` and the data's
    ``steps_per_epoch``): the schedule rule, the reference's s (:func:`default_s`, for an ImageNet model with
    ``imagenet``) times ``(paper_lr_sum(imagenet) / lr_sum(protocol, steps_per_epoch)) ** S_EXPONENT``,
    rounded to 4 significant digits (``rule: "schedule"``); on the reference's own schedule that is its s
    exactly.
    Without a schedule: the reference's s (``rule: "reference"``).

    >>> from prune_nas.training.protocol import Protocol
    >>> schedule_s("vgg", protocol=Protocol.cifar(), steps_per_epoch=782)["s"]
    0.0001
    >>> schedule_s("vgg", protocol=Protocol.cifar(epochs=10, flip=False), steps_per_epoch=23)["s"]
    0.01554
    >>> schedule_s("vgg", protocol=Protocol.imagenet(), steps_per_epoch=5005, imagenet=True)["s"]
    1e-05
    >>> schedule_s("resnet", s=3e-4, protocol=Protocol.cifar(epochs=10), steps_per_epoch=23)["rule"]
    'given'
    """
    reference = default_s(family, imagenet)
    where = f"ImageNet {family}" if imagenet else f"CIFAR {family}"
    if s is not None:
        return {"s": float(s), "rule": "given", "text": f"s = {float(s):g}, as given"}
    if protocol is None or steps_per_epoch is None:
        return {"s": reference, "rule": "reference",
                "text": f"s = {reference:g}, the reference code's for {where} (no schedule to scale it to)"}
    ours, ref = lr_sum(protocol, steps_per_epoch), paper_lr_sum(imagenet)
    epochs, steps = (IMAGENET_EPOCHS, IMAGENET_STEPS_PER_EPOCH) if imagenet else (PAPER_EPOCHS,
                                                                                  PAPER_STEPS_PER_EPOCH)
    value = float(f"{reference * (ref / ours) ** S_EXPONENT:.4g}")
    text = (f"s = {value:.4g} by the schedule rule: the reference code's s for {where}, {reference:g} on its "
            f"schedule of {epochs} epochs x {steps} steps (sum of lr {ref:.6g}), times "
            f"({ref:.6g} / {ours:.4g}) ** {S_EXPONENT:g} for this schedule's {protocol.epochs} epochs x "
            f"{steps_per_epoch} steps (sum of lr {ours:.4g})")
    if ours < SHORTEST_LR_SUM:
        text += (f"; shorter than the shortest schedule this rule was checked to work on (sum of lr "
                 f"{SHORTEST_LR_SUM:g}, 10 digits epochs): the large model may collapse")
    return {"s": value, "rule": "schedule", "reference_s": reference, "lr_sum": round(ours, 6),
            "reference_lr_sum": round(ref, 6), "exponent": S_EXPONENT, "epochs": protocol.epochs,
            "steps_per_epoch": int(steps_per_epoch), "text": text}


def prunable_bns(genome) -> dict[str, list[str]]:
    """Width group -> module paths of the BNs slimming reads and penalises for it (see the module doc)."""
    groups, out = genome.groups, {}
    for g in groups.names:
        if groups.kind(g) == "stream":
            continue
        names = [op.name for op in bn_ops(genome, g)]
        if names:
            out[g] = names
    return out


class BNScalePenalty:
    """Training callback: add ``s * sign(gamma)`` to the gradient of every prunable BN scale."""

    def __init__(self, modules: list[str], s: float):
        self.modules, self.s = list(modules), float(s)
        self._cache: tuple[int, list[nn.Parameter]] | None = None

    def _weights(self, model: nn.Module) -> list[nn.Parameter]:
        if self._cache is None or self._cache[0] != id(model):
            self._cache = (id(model), [model.get_submodule(n).weight for n in self.modules])
        return self._cache[1]

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        for w in self._weights(model):
            if w.grad is not None:
                w.grad.add_(torch.sign(w), alpha=self.s)


def global_threshold(values: np.ndarray, ratio: float) -> float:
    """The ``ratio`` quantile of ``values`` with numpy's "lower" convention (a value that occurs)."""
    return float(np.quantile(np.asarray(values, dtype=np.float64), ratio, method="lower"))


@register
class Slimming(Method):
    name = "slimming"
    summary = ("L1 penalty on BN scales while training, then one global |gamma| threshold over all "
               "prunable BNs")
    citation = ("Liu, Li, Shen, Huang, Yan & Zhang, Learning Efficient Convolutional Networks through "
                "Network Slimming, ICCV 2017")
    target = "automatic"
    families = ("vgg", "resnet", "preresnet", "densenet")
    params = (
        Param("ratio", 0.5, "fraction of all prunable channels removed (the global |gamma| quantile)"),
        Param("s", None, "L1 weight on BN scales during training (default: the reference's 1e-4 for CIFAR "
                         "VGG, 1e-5 otherwise, scaled up for schedules shorter than the reference's)"),
    )
    regularizes_training = True
    training_params = ("s",)

    def check(self, genome, ratio=0.5, **kwargs) -> None:
        super().check(genome)
        check_ratio(ratio if ratio is not None else 0.5)

    def training_record(self, genome, *, s=None, protocol=None, steps_per_epoch=None, **_) -> dict:
        """The s the training phase uses and how it was derived (:func:`schedule_s`). ImageNet models (1000
        classes, as registered) take the reference's ImageNet s and schedule."""
        imagenet = genome.spec.num_classes == 1000
        return schedule_s(genome.family, s, protocol, steps_per_epoch, imagenet=imagenet)

    def regularizer(self, genome, **kwargs) -> dict:
        """What the training phase depends on (part of the trained model's cache key): the effective s."""
        return {"l1_bn_scales": self.training_record(genome, **kwargs)["s"]}

    def training_callbacks(self, model: nn.Module, *, genome=None, **kwargs) -> list:
        if genome is None:
            raise ValueError("slimming's training callback needs the genome (which BNs are prunable)")
        modules = [n for names in prunable_bns(genome).values() for n in names]
        return [BNScalePenalty(modules, self.training_record(genome, **kwargs)["s"])]

    def prune(self, genome, model, *, ratio=0.5, s=None, **_) -> PruneResult:
        ratio = 0.5 if ratio is None else float(ratio)
        self.check(genome, ratio=ratio)
        if model is None:
            raise ValueError("slimming prunes a trained model")
        state = state_of(model)
        scores = {g: sum(state[f"{n}.weight"].abs().double().numpy() for n in names)
                  for g, names in prunable_bns(genome).items()}
        values = np.concatenate(list(scores.values()))
        threshold = global_threshold(values, ratio)
        keep, notes = {}, []
        for g, sc in scores.items():
            pos = np.flatnonzero(sc > threshold)
            if pos.size == 0:
                pos = np.array([int(np.argmax(sc))])
                notes.append(f"{g}: kept 1 of {len(sc)} channels "
                             "(every |gamma| is at or below the threshold)")
            keep[g] = channel_ids(genome, model, g)[pos]
        small, new_state = shrink(genome, state, keep)
        removed = sum(len(sc) for sc in scores.values()) - sum(len(k) for k in keep.values())
        notes.insert(0, f"global |gamma| threshold {threshold:.4g} over {len(values)} channels in "
                        f"{len(scores)} groups; removed {removed} ({removed / len(values):.1%})")
        # s only when given: a default s depends on the training schedule, which the discover pipeline records
        params = {"ratio": ratio, **({"s": s} if s is not None else {})}
        provenance = {**small.provenance, "method": self.name, "params": params, "threshold": threshold}
        small = small.replace(name=f"{genome.name or genome.model}-{self.name}", provenance=provenance)
        return PruneResult(small, new_state, notes=notes)
