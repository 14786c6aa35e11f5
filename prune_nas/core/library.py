"""The genome library: the paper's named pruned architectures and the unpruned bases.

Named configs are defined here as data (widths lists, skip lists and ratios) and written to
``artifacts/genomes/*.json`` (shipped as ``prune_nas/bundled/genomes``) by
``python -m prune_nas.core.library``; a test checks the files match. Each entry records the reference model
its reductions are measured against and, where the original paper reports them, the reported reductions
(fractions removed) with the source.

Name resolution (``resolve_genome``): a path to a ``.json`` file, else a library name (``vgg16-a``), else a
discovered genome name (``$PRUNE_NAS_HOME/genomes/discovered``), else a registered base model (``vgg16``).
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from prune_nas.core.arch import MODELS
from prune_nas.core.errors import UserError
from prune_nas.core.generic.refs import is_generic_ref
from prune_nas.core.genome import Genome, base_genome, load_genome, save_genome
from prune_nas.core.paths import bundled_dir, output_dir

LIBRARY_DIR = bundled_dir("genomes")
M = "M"


@dataclass(frozen=True)
class Named:
    name: str
    model: str
    reference: str
    method: str
    source: str
    widths: dict = field(default_factory=dict)  # group -> width overrides on the base
    blocks: tuple[int, ...] | None = None
    shortcut_entries: tuple[int, ...] = ()  # stages opening with their first block's shortcut alone
    # Reductions (fraction removed) the original paper reports: {"params": .., "flops": ..}
    reported: dict = field(default_factory=dict)
    note: str = ""


def vgg_widths(cfg: list) -> dict[str, int]:
    """A VGG cfg list (ints and "M") -> {"conv1": .., "conv2": ..}."""
    return {f"conv{i}": w for i, w in enumerate((c for c in cfg if c != M), start=1)}


# ---- L1-norm filter pruning (Li et al., ICLR 2017): skip lists and per-stage ratios ------------------------
L1_RESNET_CONFIGS = {
    # model, config -> (skip conv ids, per-stage ratios)
    ("resnet56", "A"): ([16, 20, 38, 54], [0.1, 0.1, 0.1]),
    ("resnet56", "B"): ([16, 18, 20, 34, 38, 54], [0.6, 0.3, 0.1]),
    ("resnet110", "A"): ([36], [0.5, 0.0, 0.0]),
    ("resnet110", "B"): ([36, 38, 74], [0.5, 0.4, 0.3]),
    ("resnet34", "A"): ([2, 8, 14, 16, 26, 28, 30, 32], [0.3, 0.3, 0.3, 0.0]),
    ("resnet34", "B"): ([2, 8, 14, 16, 26, 28, 30, 32], [0.5, 0.6, 0.4, 0.0]),
}
L1_VGG16_A = [32, 64, M, 128, 128, M, 256, 256, 256, M, 256, 256, 256, M, 256, 256, 256]


def l1_resnet_widths(model: str, skip: list[int], ratios: list[float]) -> dict[str, int]:
    """Widths of the first conv of each block: conv ids count the stem as 1, block j's first conv as 2 + 2j;
    skipped ids keep their width, the others keep int(w * (1 - ratio of their stage))."""
    genome = base_genome(model)
    out, conv_id = {}, 2
    for s, n in enumerate(genome.blocks, start=1):
        for b in range(n):
            group = f"stage{s}.block{b}.conv1"
            w = genome.widths[group]
            if conv_id not in skip:
                out[group] = max(1, int(w * (1 - ratios[s - 1])))
            conv_id += 2
    return out


def _thinet_resnet50(keep: tuple[int, int, int, int]) -> dict[str, int]:
    g = base_genome("resnet50")
    return {f"stage{s}.block{b}.{c}": keep[s - 1] for s, n in enumerate(g.blocks, start=1)
            for b in range(n) for c in ("conv1", "conv2")}


LI = "Li et al., Pruning Filters for Efficient ConvNets, ICLR 2017, Tables 1-2"
THINET = "Luo et al., ThiNet, ICCV 2017, Tables 3 and 5"
HE = "He et al., Channel Pruning for Accelerating Very Deep Neural Networks, ICCV 2017"
SSS = "Huang & Wang, Data-Driven Sparse Structure Selection, ECCV 2018, Table 2"

NAMED: list[Named] = [
    Named("vgg16-a", "vgg16-l1", "vgg16-l1", "l1-norm", LI, vgg_widths(L1_VGG16_A),
          reported={"params": 0.640, "flops": 0.342}),
    Named("resnet56-a", "resnet56", "resnet56", "l1-norm", LI,
          l1_resnet_widths("resnet56", *L1_RESNET_CONFIGS[("resnet56", "A")]),
          reported={"params": 0.094, "flops": 0.104}),
    Named("resnet56-b", "resnet56", "resnet56", "l1-norm", LI,
          l1_resnet_widths("resnet56", *L1_RESNET_CONFIGS[("resnet56", "B")]),
          reported={"params": 0.137, "flops": 0.276}),
    Named("resnet110-a", "resnet110", "resnet110", "l1-norm", LI,
          l1_resnet_widths("resnet110", *L1_RESNET_CONFIGS[("resnet110", "A")]),
          reported={"params": 0.023, "flops": 0.159}),
    Named("resnet110-b", "resnet110", "resnet110", "l1-norm", LI,
          l1_resnet_widths("resnet110", *L1_RESNET_CONFIGS[("resnet110", "B")]),
          reported={"params": 0.324, "flops": 0.386}),
    Named("resnet34-a", "resnet34", "resnet34", "l1-norm", LI,
          l1_resnet_widths("resnet34", *L1_RESNET_CONFIGS[("resnet34", "A")]),
          reported={"params": 0.076, "flops": 0.155}),
    Named("resnet34-b", "resnet34", "resnet34", "l1-norm", LI,
          l1_resnet_widths("resnet34", *L1_RESNET_CONFIGS[("resnet34", "B")]),
          reported={"params": 0.108, "flops": 0.241}),
    # ThiNet and regression pruning prune the reference code's VGG-16 without BatchNorm; all three ThiNet VGGs
    # are measured against the one unpruned VGG-16 (vgg_official in the reference code).
    Named("thinet-vgg-conv", "vgg16-nobn-imagenet", "vgg16-nobn-imagenet", "thinet", THINET,
          vgg_widths([32, 32, M, 64, 64, M, 128, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M]),
          reported={"params": 1 - 131.44 / 138.34, "flops": 1 - 9.58 / 30.94}),
    Named("thinet-vgg-gap", "vgg16-nobn-imagenet-gap", "vgg16-nobn-imagenet", "thinet", THINET,
          vgg_widths([32, 32, M, 64, 64, M, 128, 128, 128, M, 256, 256, 256, M, 512, 512, 512]),
          reported={"params": 1 - 8.32 / 138.34, "flops": 1 - 9.34 / 30.94}),
    Named("thinet-vgg-tiny", "vgg16-nobn-imagenet-gap", "vgg16-nobn-imagenet", "thinet", THINET,
          vgg_widths([16, 16, M, 32, 32, M, 64, 64, 64, M, 128, 128, 128, M, 128, 128, 256]),
          reported={"params": 1 - 1.32 / 138.34, "flops": 1 - 2.01 / 30.94}),
    Named("thinet-resnet50-30", "resnet50", "resnet50", "thinet", THINET, _thinet_resnet50((19, 38, 76, 153)),
          reported={"params": 1 - 8.66 / 25.56, "flops": 1 - 2.20 / 7.72}),
    Named("thinet-resnet50-50", "resnet50", "resnet50", "thinet", THINET,
          _thinet_resnet50((32, 64, 128, 256)),
          reported={"params": 1 - 12.38 / 25.56, "flops": 1 - 3.41 / 7.72}),
    Named("thinet-resnet50-70", "resnet50", "resnet50", "thinet", THINET,
          _thinet_resnet50((44, 89, 179, 358)),
          reported={"params": 1 - 16.94 / 25.56, "flops": 1 - 4.88 / 7.72}),
    Named("vgg16-5x", "vgg16-nobn-imagenet", "vgg16-nobn-imagenet", "regression", HE,
          vgg_widths([24, 22, M, 41, 51, M, 108, 89, 111, M, 184, 276, 228, M, 512, 512, 512, M]),
          note="reported as a 5x theoretical speed-up; these widths remove 77.3% of all MACs (4.4x; 4.5x on "
               "conv layers alone) under this package's counting"),
    # The reference code's config.units: (blocks kept, first block kept) per stage. A stage whose first block
    # is gone keeps that block's projection shortcut, which down-samples; its other blocks stay identity
    # blocks. With that structure this package's MAC counting gives exactly the rethinking paper's Scratch-B
    # epochs, int(100 x FLOPs ratio) = 117 / 145 / 179 (tests/test_library.py).
    Named("sss-resnet41", "resnet50", "resnet50", "sss", SSS, blocks=(0, 4, 6, 3)),  # (0,F) (4,T) (6,T) (3,T)
    Named("sss-resnet32", "resnet50", "resnet50", "sss", SSS, blocks=(1, 4, 4, 1),  # (1,F) (4,T) (4,T) (1,T)
          shortcut_entries=(1,)),
    Named("sss-resnet26", "resnet50", "resnet50", "sss", SSS, blocks=(0, 2, 5, 1),  # (0,F) (2,F) (5,F) (1,T)
          shortcut_entries=(2, 3)),
]
BASES = ["vgg16", "vgg16-l1", "vgg19", "resnet56", "resnet110", "preresnet164", "densenet40", "resnet34",
         "resnet50", "vgg16-imagenet", "vgg16-nobn-imagenet", "vgg11-imagenet"]


def named_genome(n: Named) -> Genome:
    from prune_nas.core.version import __version__

    base = base_genome(n.model, blocks=n.blocks)
    widths = dict(base.widths)
    widths.update(n.widths)
    provenance = {"method": n.method, "source": n.source, "reference": n.reference,
                  "prune_nas_version": __version__}
    if n.reported:
        provenance["reported_reduction"] = {k: round(v, 4) for k, v in n.reported.items()}
    if n.note:
        provenance["note"] = n.note
    return base.replace(name=n.name, widths=widths, shortcut_entries=n.shortcut_entries,
                        provenance=provenance)


def base_library_genome(model: str) -> Genome:
    from prune_nas.core.version import __version__

    g = base_genome(model)
    return g.replace(provenance={"method": "unpruned", "reference": model, "prune_nas_version": __version__})


def library_genomes() -> dict[str, Genome]:
    out = {n.name: named_genome(n) for n in NAMED}
    out.update({m: base_library_genome(m) for m in BASES})
    return out


def names() -> list[str]:
    return sorted(p.stem for p in LIBRARY_DIR.glob("*.json"))


def get(name: str) -> Genome:
    """A library genome by name (from ``artifacts/genomes/``)."""
    path = LIBRARY_DIR / f"{name}.json"
    if not path.exists():
        close = difflib.get_close_matches(name, sorted(set(names()) | set(MODELS)), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"no library genome named {name!r}{hint}; `prune-nas genome list` shows them")
    return load_genome(path)


def resolve_genome(ref: str) -> Genome:
    """A genome from a file path, a library name, a discovered genome name, or a base model name."""
    path = Path(ref)
    if ref.endswith(".json") or path.exists():
        return load_genome(path)
    if (LIBRARY_DIR / f"{ref}.json").exists():
        return get(ref)
    discovered = output_dir("genomes", "discovered") / f"{ref}.json"
    if discovered.exists():
        return load_genome(discovered)
    if ref in MODELS or is_generic_ref(ref):
        return base_genome(ref)
    close = difflib.get_close_matches(ref, sorted(set(names()) | set(MODELS)), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UserError(f"{ref!r} is not a genome file, a library genome or a model{hint}; "
                    "`prune-nas genome list` shows the names")


def reference_of(genome: Genome) -> Genome:
    """The genome a genome's reductions are measured against: its recorded reference, else its base model
    at the same input and classes."""
    ref = genome.provenance.get("reference", genome.model)
    if is_generic_ref(ref):
        return base_genome(ref, num_classes=genome.num_classes, input_size=genome.input_size,
                           in_channels=genome.in_channels, model_args=genome.model_args)
    if ref in MODELS:
        return base_genome(ref, num_classes=genome.num_classes, input_size=genome.input_size,
                           in_channels=genome.in_channels)
    return resolve_genome(ref)


def write_library(folder: Path = LIBRARY_DIR) -> list[Path]:
    return [save_genome(g, folder / f"{name}.json") for name, g in library_genomes().items()]


if __name__ == "__main__":
    for p in write_library():
        print(p)
    sys.exit(0)
