"""The training loop, the paper's protocol, budgets, masks, determinism and the failed-run path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prune_nas.core.builder import build
from prune_nas.core.cost import count
from prune_nas.core.errors import UserError
from prune_nas.core.genome import MaskRef, Sparsity, base_genome
from prune_nas.core.geometry import conv_ops
from prune_nas.core.masks import save_masks
from prune_nas.training.data import load_dataset, synthetic
from prune_nas.training.loop import evaluate_model, train_model
from prune_nas.training.protocol import IMAGENET_RATIO_CAP, Budget, Protocol, scratch_b_epochs
from prune_nas.training.runs import RunSpec

VGG16_A = [32, 64, "M", 128, 128, "M", 256, 256, 256, "M", 256, 256, 256, "M", 256, 256, 256]


def tiny(model: str = "vgg11", **kw):
    return base_genome(model, input_size=16, width_mult=kw.pop("width_mult", 0.125), **kw)


def fresh(genome, seed: int = 0):
    torch.manual_seed(seed)
    return build(genome)


@pytest.fixture(scope="module")
def data16():
    return synthetic(train_size=256, test_size=128, input_size=16)


# ---- protocol and budgets ----------------------------------------------------------------------------------
def test_paper_protocol_defaults():
    p = Protocol()
    assert (p.epochs, p.batch_size, p.lr, p.momentum, p.nesterov) == (160, 64, 0.1, 0.9, False)
    assert p.weight_decay == 1e-4
    assert (p.crop_padding, p.flip) == (4, True) and p.lr_milestones() == [80, 120]
    im = Protocol.imagenet()
    assert (im.epochs, im.batch_size, im.lr_milestones()) == (90, 256, [30, 60])
    ft = Protocol.finetune()
    assert (ft.epochs, ft.lr, ft.lr_milestones()) == (40, 0.001, [])
    assert Protocol.for_dataset("digits").flip is False and Protocol.for_dataset("cifar100").flip is True
    assert Protocol.from_dict(p.to_dict()) == p


def test_lr_schedule_steps():
    p = Protocol(epochs=8)
    assert [p.lr_at(e) for e in range(8)] == [0.1] * 4 + [0.01] * 2 + [0.001] * 2
    b = Protocol().with_epochs(243)  # Scratch-B of VGG-16-A: the steps move with the budget
    assert b.lr_milestones() == [121, 182]
    assert Protocol.imagenet().with_epochs(180).lr_milestones() == [60, 120]  # "steps every 60"
    assert Protocol(epochs=1).lr_at(0) == 0.1  # no step before the first epoch


def test_sss_schedule_steps_every_30_and_stretches_its_stages():
    sss = Protocol.sss_imagenet()
    assert (sss.epochs, sss.lr_milestones()) == (100, [30, 60, 90])
    # Scratch-B as the reference code's README lists: 117 / 145 / 179 epochs
    assert [sss.with_epochs(e).lr_milestones() for e in (117, 145, 179)] == [[35, 70, 105], [43, 86, 129],
                                                                             [53, 106, 159]]
    assert Protocol.from_dict(sss.to_dict()) == sss and sss.to_dict()["lr_step_every"] == 0.3
    assert "lr_step_every" not in Protocol.imagenet().to_dict()  # recorded only when set: old keys stay
    assert Protocol.finetune(sss).lr_milestones() == []
    with pytest.raises(UserError, match="not both"):
        Protocol(lr_step_every=0.3)


def test_scratch_b_vgg16_a_gives_243_epochs():
    ref = base_genome("vgg16-l1")
    a = ref.replace(widths={f"conv{i}": w for i, w in enumerate((c for c in VGG16_A if c != "M"), start=1)})
    r, c = count(ref).flops, count(a).flops
    assert 1.51 < r / c < 1.53  # PAPER.md: "about 1.52"
    assert scratch_b_epochs(r, c, 160) == 243


def test_scratch_b_arithmetic_and_imagenet_cap():
    assert scratch_b_epochs(3, 2, 160) == 240  # exact: no float rounding
    assert scratch_b_epochs(10**12 + 1, 10**12, 160) == 160
    assert scratch_b_epochs(2, 3, 160) == 106  # a larger candidate trains fewer epochs
    assert scratch_b_epochs(10, 2, 90, cap=IMAGENET_RATIO_CAP) == 180  # ratio >= 2 -> 180
    assert scratch_b_epochs(3, 2, 90, cap=IMAGENET_RATIO_CAP) == 135  # else int(90 * ratio)
    assert scratch_b_epochs(1, 10**9, 160) == 1


# ---- the loop ----------------------------------------------------------------------------------------------
def test_digits_accuracy_above_chance():
    ds = load_dataset("digits", input_size=16)
    h = train_model(fresh(tiny()), ds, Protocol.for_dataset("digits", epochs=3), seed=0, progress=False)
    assert h.status == "ok" and len(h.curve) == 3
    assert h.summary()["best_top1"] > 0.4  # chance is 0.1
    assert h.curve[-1]["loss"] < h.curve[0]["loss"]
    assert [c["lr"] for c in h.curve] == [0.1, 0.01, 0.001]


def test_callbacks_are_called(data16):
    calls = {"extra": 0, "backward": 0, "step": 0, "epochs": []}

    class Spy:
        def extra_loss(self, model):
            calls["extra"] += 1
            return 0.0 * sum(p.sum() for p in model.parameters())

        def after_backward(self, model):
            calls["backward"] += 1
            assert all(p.grad is not None for p in model.parameters())

        def after_step(self, model):
            calls["step"] += 1

        def on_epoch_end(self, model, epoch, metrics):
            calls["epochs"].append((epoch, "test_top1" in metrics))

    class Empty:  # callbacks need only the methods they use
        pass

    train_model(fresh(tiny()), data16, Protocol(epochs=2), seed=0, progress=False, callbacks=[Spy(), Empty()])
    steps = data16.steps_per_epoch(64)
    assert calls["extra"] == calls["backward"] == calls["step"] == 2 * steps
    assert calls["epochs"] == [(0, True), (1, True)]


def test_same_seed_same_result(data16):
    g = tiny("resnet20", width_mult=0.25)
    p = Protocol(epochs=2)
    a = train_model(fresh(g), data16, p, seed=1, progress=False)
    b = train_model(fresh(g), data16, p, seed=1, progress=False)
    c = train_model(fresh(g), data16, p, seed=2, progress=False)
    strip = lambda h: [{k: v for k, v in e.items() if k != "train_time_s"} for e in h.curve]  # noqa: E731
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


def test_non_finite_loss_fails_the_run(data16):
    class Explode:
        def extra_loss(self, model):
            return torch.tensor(float("nan"))

    h = train_model(fresh(tiny()), data16, Protocol(epochs=3), seed=0, progress=False, callbacks=[Explode()])
    assert h.failed and len(h.curve) == 1 and "non-finite" in h.reason and "epoch 1" in h.reason
    assert h.summary()["final_top1"] is None


def test_top5_only_beyond_ten_classes():
    ds = synthetic(num_classes=20, train_size=40, test_size=40, input_size=16)
    model = fresh(tiny(num_classes=20))
    m = evaluate_model(model, ds)
    assert m["top5"] is not None and m["top5"] >= m["top1"] and m["loss"] > 0
    assert evaluate_model(fresh(tiny()), synthetic(train_size=8, test_size=8, input_size=16))["top5"] is None


# ---- sparse genomes ----------------------------------------------------------------------------------------
def sparse_genome(tmp_path, density: float = 0.3, seed: int = 0):
    g = tiny()
    rng = np.random.default_rng(seed)
    masks = {name: rng.random((op.cout, op.cin, op.k, op.k)) < density for name, op in conv_ops(g).items()}
    sha = save_masks(masks, tmp_path / "masks.npz")
    return g.replace(sparsity=Sparsity(mask=MaskRef("masks.npz", sha)), source_dir=tmp_path), masks


def test_masks_stay_zero_through_training(tmp_path, data16):
    g, masks = sparse_genome(tmp_path)
    model = fresh(g)
    before = {n: model.get_submodule(n).weight.detach().clone() for n in masks}
    p = Protocol(epochs=2, momentum=0.9, weight_decay=5e-3)  # strong decay: any leak would show
    h = train_model(model, data16, p, seed=0, progress=False)
    assert h.status == "ok"
    for name, mask in masks.items():
        w = model.get_submodule(name).weight.detach()
        keep = torch.as_tensor(mask)
        assert torch.count_nonzero(w[~keep]) == 0, name
        assert not torch.equal(w[keep], before[name][keep])  # kept weights did train
    assert count(g).flops < count(tiny()).flops  # only kept weights count, so Scratch-B trains it longer
    spec = RunSpec(g, "synthetic", Protocol(), Budget("flops", reference=tiny()))
    assert spec.effective_protocol().epochs > 300


def test_sparse_init_scaled_to_kept_fan_in(tmp_path):
    g, masks = sparse_genome(tmp_path, density=0.25)
    model = fresh(g)
    name = max(masks, key=lambda n: masks[n].size)
    conv = model.get_submodule(name)
    kept = conv.weight.detach()[torch.as_tensor(masks[name])]
    n = masks[name].sum() / conv.in_channels
    assert kept.std().item() == pytest.approx(np.sqrt(2 / n), rel=0.15)
