"""The fast engine on CPU: its SGD is torch's SGD, its device-side augmentation has the right statistics,
and a step through it equals an eager step."""

import pytest
import torch
from torch.nn import functional as F

from prune_nas import build
from prune_nas.core.genome import base_genome
from prune_nas.training.data import TensorDataset, load_dataset
from prune_nas.training.engine import EngineOptions, FastStep, ForeachSGD, device_epoch
from prune_nas.training.protocol import Protocol

CPU = torch.device("cpu")


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return build(base_genome("vgg11", width_mult=0.125, input_size=16))


def test_foreach_sgd_is_torch_sgd_to_float_rounding():
    a, b = tiny_model(), tiny_model()
    ref = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    ours = ForeachSGD(list(b.parameters()), 0.1, 0.9, 1e-4, CPU)
    gen = torch.Generator().manual_seed(0)
    for step in range(4):
        if step == 2:  # an lr step is a tensor write
            for group in ref.param_groups:
                group["lr"] = 0.01
            ours.set_lr(0.01)
        x = torch.randn(8, 3, 16, 16, generator=gen)
        y = torch.randint(0, 10, (8,), generator=gen)
        for model, opt in ((a, ref), (b, ours)):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        # torch fuses p - lr * buf into one rounding; a tensor lr costs a second one.
        assert torch.allclose(pa, pb, rtol=1e-6, atol=1e-7), (pa - pb).abs().max()


def _position_dataset(n=512, size=8):
    """Each image is black but for one white pixel at the centre; its label is its index mod 10."""
    x = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    x[:, :, size // 2, size // 2] = 255
    y = torch.arange(n) % 10
    return TensorDataset("positions", 10, x, y, x[:10], y[:10], (0.0,), (1.0,), flip=True)


def test_device_epoch_augmentation_statistics():
    ds = _position_dataset()
    gen = torch.Generator().manual_seed(0)
    shifts, batches = [], 0
    for x, y in device_epoch(ds, 64, gen, CPU, crop_padding=4, flip=True):
        batches += 1
        assert x.shape == (64, 1, 8, 8) and y.shape == (64,)
        flat = x.view(64, -1)
        has_pixel = flat.max(1).values > 0
        pos = flat.argmax(1)
        rows, cols = pos // 8, pos % 8
        shifts += [(int(r) - 4, int(c) - 4) for r, c, h in zip(rows, cols, has_pixel) if h]
    assert batches == 512 // 64  # fixed-size batches, last partial batch dropped
    dy = torch.tensor([s[0] for s in shifts])
    # The pixel sits at row 4 of 8, row 8 of the padded 16: a crop offset o in 0..8 moves it to row 8 - o,
    # visible for o in 1..8, so the shift 4 - o is uniform on -4..3 given visibility (mean -0.5).
    assert sorted(set(dy.tolist())) == list(range(-4, 4))
    assert dy.float().mean() == pytest.approx(-0.5, abs=0.25)
    visible = len(shifts) / (512 // 64 * 64)
    assert visible == pytest.approx((8 / 9) ** 2, abs=0.06)  # both offsets must keep it on the canvas


def test_device_epoch_flips_half_and_keeps_labels():
    n = 1000
    x = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    x[:, :, :, 0] = 255  # bright left column: flipped images have it on the right
    y = torch.arange(n) % 10
    ds = TensorDataset("cols", 10, x, y, x[:10], y[:10], (0.0,), (1.0,), flip=True)
    seen_y, flipped = [], 0
    for xb, yb in device_epoch(ds, 100, torch.Generator().manual_seed(1), CPU, crop_padding=0, flip=True):
        flipped += int((xb[:, 0, 0, 3] > 0).sum())
        seen_y.append(yb)
    assert flipped / n == pytest.approx(0.5, abs=0.06)  # binomial sd 0.016
    assert sorted(torch.cat(seen_y).tolist()) == sorted(y.tolist())


def test_fast_step_equals_an_eager_step():
    a, b = tiny_model(), tiny_model()
    protocol = Protocol(epochs=1, lr=0.05)
    step = FastStep(b, protocol, CPU, EngineOptions("fast").resolved(CPU))
    opt = torch.optim.SGD(a.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        x = torch.randn(16, 3, 16, 16, generator=gen)
        y = torch.randint(0, 10, (16,), generator=gen)
        opt.zero_grad()
        loss = F.cross_entropy(a(x), y)
        loss.backward()
        opt.step()
        step(x, y)
    for (na, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6), na
    for ba, bb in zip(a.buffers(), b.buffers()):
        assert torch.allclose(ba.float(), bb.float(), atol=1e-6)


def test_resolved_options_default_off_on_cpu():
    opts = EngineOptions("fast").resolved(CPU)
    assert (opts.amp, opts.channels_last, opts.graph) == (False, False, False)
    assert EngineOptions("fast", amp=True).resolved(CPU).amp is True


def test_train_model_runs_the_same_loop_with_either_engine():
    from prune_nas.training.loop import train_model

    ds = load_dataset("synthetic", input_size=16)
    results = {}
    for engine in ("eager", "fast"):
        # 4 epochs: VGG's BN scales start at 0.5 (as the reference code), which learns a little slower here
        h = train_model(tiny_model(), ds, Protocol(epochs=4, batch_size=32, lr=0.05), seed=0, progress=False,
                        engine=engine)
        assert h.status == "ok" and len(h.curve) == 4
        results[engine] = h.curve[-1]["test_top1"]
    # Synthetic classes are separable: both engines learn them (chance is 0.1).
    assert min(results.values()) > 0.5, results
    assert abs(results["eager"] - results["fast"]) < 0.25, results


def test_fast_engine_runs_the_eager_step_on_a_cpu_and_says_so():
    from prune_nas.training.engine import EagerStep, make_step

    opts = EngineOptions("fast").resolved(CPU)
    assert opts.kind == "eager" and opts.to_dict()["requested"] == "fast"
    assert isinstance(make_step(tiny_model(), Protocol(), CPU, "fast"), EagerStep)
    assert isinstance(make_step(tiny_model(), Protocol(), CPU, EngineOptions("fast", cpu_fallback=False)),
                      FastStep)
    assert "requested" not in EngineOptions("eager").resolved(CPU).to_dict()
