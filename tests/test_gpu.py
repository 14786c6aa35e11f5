"""The fast engine on a real CUDA device (deselected by default; run with `pytest -m gpu`)."""

import dataclasses
import gc
import statistics

import numpy as np
import pytest
import torch

from prune_nas import build
from prune_nas.core.genome import Sparsity, base_genome
from prune_nas.training.data import load_dataset
from prune_nas.training.engine import EngineOptions, FastStep, device_epoch
from prune_nas.training.loop import evaluate_model, train_model
from prune_nas.training.protocol import Protocol

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


def _model(seed, genome=None):
    torch.manual_seed(seed)
    return build(genome or base_genome("vgg11", width_mult=0.25)).to(CUDA)


def test_graph_replay_equals_eager_steps_in_fp32():
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    ds = load_dataset("digits")
    models, steps = [], []
    for graph in (False, True):
        m = _model(0)
        opts = EngineOptions("fast", amp=False, channels_last=False, graph=graph).resolved(CUDA)
        steps.append(FastStep(m, Protocol(lr=0.05), CUDA, opts))
        models.append(m)
    for step in steps:
        gen = torch.Generator().manual_seed(0)
        for i, (x, y) in enumerate(device_epoch(ds, 64, gen, CUDA, crop_padding=4, flip=False)):
            if i == 3:
                step.set_lr(0.005)  # the lr is a device tensor read by the graph
            step(x, y)
    assert steps[1].use_graph and not steps[0].use_graph
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name
    assert torch.allclose(steps[0].loss_sum, steps[1].loss_sum, rtol=1e-4)


def test_fast_engine_matches_eager_accuracy_statistically():
    ds = load_dataset("digits")
    protocol = Protocol(epochs=15, lr=0.05)
    acc = {"eager": [], "fast": []}
    for engine in acc:
        for seed in range(3):
            h = train_model(_model(seed), ds, protocol, seed=seed, device=CUDA, progress=False, engine=engine)
            acc[engine].append(h.curve[-1]["test_top1"])
    means = {k: statistics.mean(v) for k, v in acc.items()}
    assert min(means.values()) > 0.9, acc
    assert abs(means["eager"] - means["fast"]) < 0.03, acc


def test_masked_weights_stay_zero_inside_the_graph(tmp_path):
    from prune_nas.core.genome import MaskRef, load_genome, save_genome
    from prune_nas.core.geometry import ops_of
    from prune_nas.core.masks import save_masks

    g = base_genome("vgg11", width_mult=0.25)
    rng = np.random.default_rng(0)
    masks = {op.name: rng.random((op.cout, op.cin, op.k, op.k)) < 0.3
             for op in ops_of(g) if op.kind == "conv"}
    sha = save_masks(masks, tmp_path / "m.npz")
    sparse = dataclasses.replace(g, sparsity=Sparsity(mask=MaskRef("m.npz", sha)), source_dir=tmp_path)
    g = load_genome(save_genome(sparse, tmp_path / "g.json"))
    model = _model(0, g)
    h = train_model(model, load_dataset("digits"), Protocol(epochs=3, lr=0.05), seed=0, device=CUDA,
                    progress=False, engine="fast")
    assert h.status == "ok"
    for name, mask in masks.items():
        w = model.get_submodule(name).weight.detach().cpu().numpy()
        assert np.all(w[~mask] == 0), name


def test_no_memory_growth_across_candidates():
    ds = load_dataset("digits")
    allocated = []
    for seed in range(5):
        model = _model(seed)
        train_model(model, ds, Protocol(epochs=1), seed=seed, device=CUDA, progress=False, engine="fast")
        evaluate_model(model, ds, CUDA)
        del model
        gc.collect()
        torch.cuda.synchronize()
        allocated.append(torch.cuda.memory_allocated())
    # The dataset copy stays cached on the device; models and graphs must not pile up.
    assert max(allocated) - allocated[0] < 1 << 20, allocated
