"""Winning-ticket initialisation: the large model's original init is re-created bit for bit from the recorded
seed and genome, sliced to the kept channels (structured) or masked (unstructured), and keys its runs."""

import numpy as np
import pytest
import torch

from prune_nas.core.errors import UserError
from prune_nas.core.genome import load_genome
from prune_nas.core.masks import load_masks
from prune_nas.design.discover import discover
from prune_nas.design.ticket import attach_ticket, ticket_state
from prune_nas.methods.surgery import state_of
from prune_nas.training import loop
from prune_nas.training.protocol import Protocol
from prune_nas.training.runs import RunSpec, init_model


@pytest.fixture
def captured(monkeypatch):
    """The large model's weights at the moment discover starts training it."""
    seen = []
    real = loop.train_model

    def spy(model, *args, **kwargs):
        seen.append({k: v.clone() for k, v in state_of(model).items()})  # state_of shares storage
        return real(model, *args, **kwargs)

    monkeypatch.setattr(loop, "train_model", spy)
    return seen


def _discover(tmp_path, method, seed=0, **kw):
    d = discover(method, dataset="synthetic", epochs=1, seed=seed, out_dir=tmp_path, progress=False,
                 store_root=tmp_path / "store", log=lambda s: None, **kw)
    return load_genome(d.path)


def test_structured_ticket_is_the_original_init_sliced(tmp_path, captured):
    genome = _discover(tmp_path, "l1-norm", ratio=0.5)
    (init,) = captured
    kept = genome.provenance["kept_channels"]
    assert set(kept) and all(len(v) == genome.widths[g] for g, v in kept.items())
    ticket = ticket_state(genome)
    idx = torch.as_tensor(kept["conv2"])
    assert torch.equal(ticket["features.conv2.weight"], init["features.conv2.weight"][idx][:, kept["conv1"]])
    assert torch.equal(ticket["features.bn2.weight"], init["features.bn2.weight"][idx])
    g = attach_ticket(genome, tmp_path / f"{genome.name}.ticket.pt")
    model = init_model(RunSpec(g, "synthetic", Protocol(epochs=1), seed=7, init="winning_ticket"))
    for k, v in ticket.items():
        assert torch.equal(model.state_dict()[k], v), k  # bit-identical, whatever the run's own seed


def test_unstructured_ticket_is_the_original_init_masked(tmp_path, captured):
    genome = _discover(tmp_path, "magnitude", ratio=0.8)
    (init,) = captured
    g = attach_ticket(genome, tmp_path / f"{genome.name}.ticket.pt")
    model = init_model(RunSpec(g, "synthetic", Protocol(epochs=1), seed=3, init="winning_ticket"))
    masks = load_masks(g)
    state = model.state_dict()
    for name, mask in masks.items():
        want = init[f"{name}.weight"] * torch.as_tensor(mask, dtype=torch.float32)
        assert torch.equal(state[f"{name}.weight"], want)
    assert float(np.mean([m.mean() for m in masks.values()])) < 0.5


def test_the_run_key_names_the_original_init(tmp_path):
    a = _discover(tmp_path / "a", "l1-norm", ratio=0.5, seed=0)
    b = _discover(tmp_path / "b", "l1-norm", ratio=0.5, seed=1)
    ta = attach_ticket(a, tmp_path / "a" / "t.pt")
    tb = attach_ticket(b, tmp_path / "b" / "t.pt")
    def spec(g, init):
        return RunSpec(g, "synthetic", Protocol(epochs=1), seed=0, init=init)

    assert spec(ta, "winning_ticket").key != spec(ta, "scratch").key
    assert [spec(t, "winning_ticket").init_dict()["seed"] for t in (ta, tb)] == [0, 1]
    assert ta.widths == tb.widths  # same architecture (l1-norm at a fixed ratio), another large-model init:
    assert spec(ta, "winning_ticket").key != spec(tb, "winning_ticket").key  # another run
    again = attach_ticket(a, tmp_path / "a" / "t2.pt")  # derived again: the same run
    assert spec(again, "winning_ticket").key == spec(ta, "winning_ticket").key


def test_a_genome_without_the_record_is_a_user_error(tmp_path):
    from prune_nas import base_genome

    g = base_genome("vgg11", width_mult=0.125, input_size=16)
    with pytest.raises(UserError, match="large model's initialisation"):
        attach_ticket(g, tmp_path / "t.pt")
    with pytest.raises(UserError, match="winning-ticket"):
        _ = RunSpec(g, "synthetic", init="winning_ticket").key
