"""Genome: round trip, canonical keys, validation and its error messages, fuzzing."""

import copy
import json
import random
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prune_nas.core.errors import GenomeError, UserError
from prune_nas.core.genome import Genome, base_genome, load_genome, random_genome, save_genome, validate
from prune_nas.core.graph import width_groups
from prune_nas.core.library import get
from prune_nas.core.masks import save_masks


def test_round_trip_through_json_and_file(tmp_path):
    g = get("resnet56-b")
    assert Genome.from_json(g.to_json()) == g
    path = save_genome(g, tmp_path / "g.json")
    again = load_genome(path)
    assert again == g and again.key == g.key


# Keys are content hashes of canonical JSON: pinned so they never drift silently (a change here breaks every
# stored result and every genome shared with another project).
PINNED_KEYS = {
    "vgg16-a": "dc50c2cb2555573e",
    "resnet56-b": "2acea7629d28aab3",
}


@pytest.mark.parametrize("name", sorted(PINNED_KEYS))
def test_keys_are_pinned(name):
    assert get(name).key == PINNED_KEYS[name]


def test_key_ignores_name_and_provenance_but_not_widths():
    g = get("vgg16-a")
    assert g.replace(name="other", provenance={"method": "x"}).key == g.key
    widths = dict(g.widths, conv1=31)
    assert g.replace(widths=widths).key != g.key


def test_key_is_independent_of_json_key_order():
    d = get("resnet56-a").to_dict()
    shuffled = dict(reversed(list(d.items())))
    shuffled["widths"] = dict(reversed(list(d["widths"].items())))
    assert Genome.from_dict(shuffled).key == get("resnet56-a").key


def test_explicit_default_blocks_hash_like_null():
    g = base_genome("resnet20")
    d = g.to_dict()
    d["blocks"] = None
    assert Genome.from_dict(d).key == g.key


def _valid_dict():
    return base_genome("resnet20").to_dict()


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["widths"].__setitem__("stage1", 0), "widths.stage1"),
    (lambda d: d["widths"].__setitem__("stage2", -3), "widths.stage2"),
    (lambda d: d["widths"].pop("stage3.block2.conv1"), "widths"),
    (lambda d: d["widths"].__setitem__("stage9.block0.conv1", 4), "widths"),
    (lambda d: d.__setitem__("model", "resnet57"), "model"),
    (lambda d: d.__setitem__("family", "vgg"), "family"),
    (lambda d: d.__setitem__("blocks", [3, 3]), "blocks"),
    (lambda d: d.__setitem__("num_classes", 0), "num_classes"),
    (lambda d: d.__setitem__("version", 7), "version"),
    (lambda d: d.pop("widths"), "widths"),  # missing
    (lambda d: d["widths"].__setitem__("stage1", "16"), "widths.stage1"),
])
def test_bad_genomes_name_the_field(mutate, field):
    d = _valid_dict()
    mutate(d)
    with pytest.raises(GenomeError) as err:
        Genome.from_dict(d)
    assert err.value.field == field
    assert "\n" not in str(err.value)


def test_wrong_stage_count_for_vgg_blocks():
    d = base_genome("vgg16").to_dict()
    d["blocks"] = [1, 1, 1]
    with pytest.raises(GenomeError, match="no prunable blocks"):
        Genome.from_dict(d)


def test_selection_cannot_exceed_existing_channels():
    d = base_genome("densenet40").to_dict()
    d["widths"]["dense1.layer0.select"] = 25  # the stem makes only 24
    with pytest.raises(GenomeError, match="selects 25 channels but only 24 exist"):
        Genome.from_dict(d)


def test_malformed_json_is_one_line():
    with pytest.raises(GenomeError, match="not valid JSON"):
        Genome.from_json('{"format": "prune-nas.genome",')


def test_missing_file_is_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_genome(tmp_path / "nope.json")


def _sparse_genome(tmp_path, shape_fix=None):
    g = base_genome("vgg11", width_mult=0.125)
    from prune_nas.core.geometry import ops_of

    convs = [op for op in ops_of(g) if op.kind == "conv"]
    rng = np.random.default_rng(0)
    masks = {op.name: rng.random((op.cout, op.cin, 3, 3)) < 0.5 for op in convs}
    if shape_fix:
        shape_fix(masks)
    sha = save_masks(masks, tmp_path / "g.masks.npz")
    d = g.to_dict()
    d["sparsity"] = {"mask": {"file": "g.masks.npz", "sha256": sha}}
    (tmp_path / "g.json").write_text(json.dumps(d))
    return tmp_path / "g.json", masks


def test_mask_file_loads_and_counts(tmp_path):
    from prune_nas.core.cost import count

    path, masks = _sparse_genome(tmp_path)
    g = load_genome(path)
    dense = count(g.replace(sparsity=None))
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.size for m in masks.values())
    assert count(g).params == dense.params - (total - kept)


def test_mask_shape_mismatch_is_rejected(tmp_path):
    def wrong(masks):
        masks["features.conv1"] = np.ones((3, 3, 3, 3), bool)

    path, _ = _sparse_genome(tmp_path, wrong)
    with pytest.raises(GenomeError, match="has shape"):
        load_genome(path)


def test_mask_hash_mismatch_is_rejected(tmp_path):
    path, _ = _sparse_genome(tmp_path)
    d = json.loads(path.read_text())
    d["sparsity"]["mask"]["sha256"] = "0" * 64
    path.write_text(json.dumps(d))
    with pytest.raises(GenomeError, match="does not match"):
        load_genome(path)


def test_random_genomes_always_validate():
    rng = random.Random(1)
    for model in ("vgg19", "resnet56", "preresnet110", "densenet40", "densenet-bc100", "resnet50"):
        base = base_genome(model).widths
        for _ in range(5):
            g = random_genome(model, rng)
            validate(g)  # raises GenomeError if a selection reads more channels than exist
            assert Genome.from_dict(g.to_dict()) == g
            assert all(1 <= w <= base[n] for n, w in g.widths.items()) and dict(g.widths) != dict(base)


def test_coupling_graph_groups_residual_adds():
    groups = width_groups("resnet56", (9, 9, 9))
    # The stem feeds stage 1 through identity shortcuts: one group. Stages 2 and 3 start with a pad shortcut.
    assert groups.slot_group["stem"] == "stage1"
    assert groups.members["stage2"] == ("stage2",)
    assert len(groups.names) == 3 + 27
    # ImageNet ResNet-50 starts stage 1 with a projection: the stem is free.
    assert width_groups("resnet50", (3, 4, 6, 3)).slot_group["stem"] == "stem"


def test_imports_go_downward():
    """genome / graph / cost / library know nothing of training, methods or search (DESIGN.md)."""
    code = ("import sys, prune_nas.core.genome, prune_nas.core.cost, prune_nas.core.library, "
            "prune_nas.core.graph;print(sorted(m for m in sys.modules if m.startswith(('prune_nas.training', "
            "'prune_nas.methods', 'prune_nas.design', 'prune_nas.search', 'prune_nas.repro', 'optuna'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- fuzzing: any mutation of a valid genome either validates or raises GenomeError ------------------------
_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 600), st.floats(allow_nan=True),
                    st.text(max_size=5), st.lists(st.integers(-2, 20), max_size=5), st.dictionaries(
                        st.text(max_size=5), st.integers(-1, 5), max_size=3))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path_choice=st.integers(0, 10_000), value=_values, drop=st.booleans())
def test_fuzz_validator_never_crashes(path_choice, value, drop):
    base = _valid_dict()
    d = copy.deepcopy(base)
    keys = [("top", k) for k in d] + [("widths", k) for k in d["widths"]] + [("input", k) for k in d["input"]]
    where, key = keys[path_choice % len(keys)]
    target = d if where == "top" else d[where]
    if drop:
        target.pop(key)
    else:
        target[key] = value
    try:
        g = Genome.from_dict(d)
    except GenomeError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert isinstance(g, Genome)
