"""Search-space files are validated by a JSON Schema (``prune_nas/core/schema/space.schema.json``) before any
work: types, finite bounds, unknown keys. Every bad file is one line naming the field, with exit status 2 from
the CLI; any mutation of a valid space either validates or raises UserError, never another exception."""

from __future__ import annotations

import copy
import math

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prune_nas.cli import main
from prune_nas.core.errors import UserError
from prune_nas.search.spaces import Space, list_spaces, schema

VALID = {"name": "tiny", "model": "vgg11", "width": 0.125, "input_size": 16, "dataset": "synthetic",
         "protocol": {"lr": 0.05, "batch_size": 32}, "budget": {"kind": "flops", "epochs": 1, "cap": 2},
         "seeds": 2, "early_stopping": {"warmup_epochs": 1, "startup_trials": 2},
         "objective": {"maximize": "accuracy", "max_flops": 0.6, "max_latency_ms": 5.0},
         "sampler": {"kind": "tpe", "seed": 0, "startup_trials": 2},
         "parameters": {"stage_multiplier": {"range": [0.25, 1.0], "step": 0.25},
                        "layer_width": {"range": [0.5, 1.0], "step": 0.25, "groups": ["conv*"]}},
         "seed_genomes": ["vgg11-*"], "uniform": [0.5]}


def test_the_schema_is_valid_and_every_bundled_space_meets_it():
    jsonschema.Draft202012Validator.check_schema(schema())
    for path in list_spaces():
        assert not list(
            jsonschema.Draft202012Validator(schema()).iter_errors(yaml.safe_load(path.read_text()))
        ), path


def test_objectives_and_constraints_spell_the_same_objective_and_round_trip():
    space = Space.from_dict(VALID, where="x.yaml")
    assert space.objective.max_latency_ms == 5.0 and space.objective.needs_latency
    other = {k: v for k, v in VALID.items() if k != "objective"}
    same = Space.from_dict({**other, "objectives": ["accuracy"],
                            "constraints": {"max_flops": 0.6, "max_latency_ms": 5.0}})
    assert same.objective == space.objective
    assert Space.from_dict(space.to_dict()) == space
    pareto = {k: v for k, v in other.items() if k != "early_stopping"}
    assert Space.from_dict({**pareto, "objectives": ["accuracy", "latency"]}).objective.metrics == \
        ("accuracy", "latency")
    with pytest.raises(UserError, match="not both"):
        Space.from_dict({**VALID, "objectives": ["accuracy"]})
    assert Space.from_dict({**VALID, "budget": "epochs"}).budget == {"kind": "epochs", "epochs": None,
                                                                     "cap": None}


@pytest.mark.parametrize("text, field, words", [
    ("budget: 5", "budget", "must be one of epochs, flops"),
    ("budget: {kind: 5}", "budget.kind", "must be one of epochs, flops, got 5"),
    ("protocol: {lr: fast}", "protocol.lr", "must be a number, got 'fast'"),
    ("protocol: {lr: 1e-3}", "protocol.lr", "write 1.0e-3"),
    ("protocol: {lr: 0}", "protocol.lr", "must be > 0"),
    ("protocol: {lr: -0.1}", "protocol.lr", "must be > 0"),
    ("protocol: {batch_size: 0}", "protocol.batch_size", "must be >= 1"),
    ("protocol: {batch_size: 2.0}", "protocol.batch_size", "must be an integer"),
    ("protocol: {momentum: .nan}", "protocol.momentum", "numbers must be finite"),
    ("seeds: 0", "seeds", "must be >= 1"),
    ("seeds: 101", "seeds", "must be <= 100"),
    ("seeds: true", "seeds", "must be an integer"),
    ("width: .inf", "width", "numbers must be finite"),
    ("objective: {maximize: accuracy, max_latency_ms: -1}", "objective.max_latency_ms", "must be > 0"),
    ("objectives: [accuracy, speed]", "objectives[1]", "must be one of accuracy, flops, params, latency"),
    ("objectives: [accuracy, accuracy]", "objectives", "repeated item"),
    ("colour: blue", "colour", "unknown key"),
    ("sampler: {kind: tpe, sed: 1}", "sampler.sed", "did you mean seed?"),
    ("uniform: [0.5, 1.5]", "uniform[1]", "must be < 1"),
])
def test_bad_fields_are_one_line_naming_the_field_with_exit_2(tmp_path, capsys, text, field, words):
    path = tmp_path / "bad.yaml"
    path.write_text("model: vgg11\nwidth: 0.125\ninput_size: 16\ndataset: synthetic\n"
                    "parameters: {stage_multiplier: {range: [0.25, 1.0], step: 0.25}}\n" + text + "\n")
    assert main(["search", "--space", str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"prune-nas: error: {path}: {field}: ") and words in err, err


# ---- any mutation: a Space or a UserError ------------------------------------------------------------------
def _paths(d, prefix=()):
    """Every key path of a nested dict / list."""
    out = []
    items = d.items() if isinstance(d, dict) else enumerate(d) if isinstance(d, list) else ()
    for k, v in items:
        out.append((*prefix, k))
        out += _paths(v, (*prefix, k))
    return out


PATHS = _paths(VALID)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.text(max_size=8)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["accuracy", "flops", "params", "latency", "epochs", "tpe", "nsga2", "all", "conv*",
                       0.0, 1.0, 1, 0, -1, 1e-9, 100, 101]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(PATHS), st.sampled_from(["set", "delete", "add"]), VALUES,
                          st.text(max_size=6)), min_size=1, max_size=3))
def test_mutated_spaces_validate_or_raise_user_error(mutations):
    d = copy.deepcopy(VALID)
    for path, op, value, key in mutations:
        parent = d
        try:
            for k in path[:-1]:
                parent = parent[k]
            if op == "delete":
                del parent[path[-1]]
            elif op == "add" and isinstance(parent, dict):
                parent[key] = value
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    try:
        space = Space.from_dict(d, where="m.yaml")
    except UserError as e:
        assert str(e).startswith("m.yaml: ") and "\n" not in str(e)
        return
    # What validates is usable: finite numbers in range, a grid, a base model.
    assert 1 <= space.seeds <= 100 and math.isfinite(space.width) and space.width > 0
    assert space.param_defs()
