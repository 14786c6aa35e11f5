"""The genome library: files match their definitions, and reductions agree with the original papers."""

import json

import pytest

from prune_nas.core.cost import count
from prune_nas.core.errors import UserError
from prune_nas.core.library import LIBRARY_DIR, NAMED, library_genomes, reference_of, resolve_genome
from prune_nas.training.protocol import scratch_b_epochs


@pytest.mark.parametrize("name", sorted(library_genomes()))
def test_library_files_match_definitions(name):
    on_disk = json.loads((LIBRARY_DIR / f"{name}.json").read_text())
    on_disk["provenance"].pop("prune_nas_version", None)
    defined = library_genomes()[name].to_dict()
    defined["provenance"].pop("prune_nas_version", None)
    assert on_disk == defined, "run `python -m prune_nas.core.library` to regenerate artifacts/genomes/"


# Reported reductions are fractions removed, from the papers named in each entry's provenance. ThiNet counts
# ResNet-50 with the stride on the first 1x1 conv (Caffe); ours has it on the 3x3 conv, which moves FLOPs
# reductions by < 0.5 percentage points.
@pytest.mark.parametrize("named", [n for n in NAMED if n.reported], ids=lambda n: n.name)
def test_reductions_agree_with_the_papers(named):
    g = resolve_genome(named.name)
    cost, ref = count(g), count(reference_of(g))
    assert 1 - cost.params / ref.params == pytest.approx(named.reported["params"], abs=0.002)
    assert 1 - cost.flops / ref.flops == pytest.approx(named.reported["flops"], abs=0.005)


def test_vgg16_a_is_the_paper_config():
    g = resolve_genome("vgg16-a")
    assert [g.widths[f"conv{i}"] for i in range(1, 14)] == [32, 64, 128, 128, 256, 256, 256, 256, 256, 256,
                                                            256, 256, 256]


def test_resnet56_b_skips_and_ratios():
    g = resolve_genome("resnet56-b")
    # conv ids 16, 18, 20 = blocks 7, 8 of stage 1 and block 0 of stage 2 keep their width
    assert g.widths["stage1.block7.conv1"] == 16 and g.widths["stage1.block8.conv1"] == 16
    assert g.widths["stage2.block0.conv1"] == 32
    assert g.widths["stage1.block0.conv1"] == int(16 * 0.4)
    assert g.widths["stage2.block1.conv1"] == int(32 * 0.7)
    assert g.widths["stage3.block1.conv1"] == int(64 * 0.9)
    assert g.widths["stage1"] == 16  # residual width untouched


@pytest.mark.parametrize("name,blocks,entries,paper_epochs", [("sss-resnet41", (0, 4, 6, 3), (), 117),
                                                              ("sss-resnet32", (1, 4, 4, 1), (1,), 145),
                                                              ("sss-resnet26", (0, 2, 5, 1), (2, 3), 179)])
def test_sss_genomes_and_their_scratch_b_epochs(name, blocks, entries, paper_epochs):
    g = resolve_genome(name)
    assert (g.blocks, g.shortcut_entries) == (blocks, entries)
    # With the reference's structure (a removed first block leaves its down-sampling projection shortcut),
    # the paper's Scratch-B epochs, int(100 x FLOPs ratio), come out exactly.
    assert scratch_b_epochs(count(reference_of(g)).flops, count(g).flops, 100) == paper_epochs


def test_resolve_genome_by_file_library_and_model(tmp_path):
    assert resolve_genome("vgg16-a").name == "vgg16-a"
    assert resolve_genome("resnet20").model == "resnet20"
    path = tmp_path / "x.json"
    path.write_text(resolve_genome("resnet56-a").to_json())
    assert resolve_genome(str(path)).key == resolve_genome("resnet56-a").key
    with pytest.raises(UserError, match="did you mean"):
        resolve_genome("vgg16-aa")
