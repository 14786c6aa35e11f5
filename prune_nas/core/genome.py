"""Genome: a frozen, versioned, JSON description of a candidate architecture.

A genome names a base model and gives one width per channel-coupling group (see ``graph.py``), the kept
blocks per stage, and optionally sparsity (per-layer density, per-stage 3x3 keep maps, or an exact mask
file). Its ``key`` hashes only what defines the architecture (not its name or provenance), so the same
architecture found twice is trained once.

>>> g = base_genome("resnet56")
>>> g.widths["stage1"], len(g.key)
(16, 16)
>>> Genome.from_json(g.to_json()) == g
True
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prune_nas.core.arch import ModelSpec, get_family, get_spec
from prune_nas.core.errors import GenomeError, UserError
from prune_nas.core.generic.family import generic_spec
from prune_nas.core.generic.refs import is_generic_ref, parse_ref
from prune_nas.core.geometry import conv_ops
from prune_nas.core.graph import WidthGroups, width_groups
from prune_nas.core.masks import load_masks

FORMAT = "prune-nas.genome"
VERSION = 1


@dataclass(frozen=True)
class MaskRef:
    file: str  # relative to the genome file's folder
    sha256: str


@dataclass(frozen=True)
class Sparsity:
    density: Mapping[str, float] = field(default_factory=dict)
    kernel_keep: Mapping[str, list] = field(default_factory=dict)
    mask: MaskRef | None = None
    seed: int | None = None

    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        if self.density:
            out["density"] = dict(self.density)
        if self.kernel_keep:
            out["kernel_keep"] = {k: [list(r) for r in v] for k, v in self.kernel_keep.items()}
        if self.mask:
            out["mask"] = {"file": self.mask.file, "sha256": self.mask.sha256}
        if self.seed is not None:
            out["seed"] = self.seed
        return out


@dataclass(frozen=True)
class Genome:
    model: str
    widths: Mapping[str, int]
    num_classes: int
    input_size: int
    in_channels: int = 3
    blocks: tuple[int, ...] | None = None
    # Stages (1-based) whose first block lost its residual branch while later blocks stayed: the stage opens
    # with that block's shortcut alone (it still changes resolution and width), and its kept blocks are
    # identity blocks. A stage with no block opens with its shortcut anyway and is not listed.
    shortcut_entries: tuple[int, ...] = ()
    sparsity: Sparsity | None = None
    name: str | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    # Generic models only (``torchvision:``, ``timm:``, ``python:`` references): {"kwargs": factory keyword
    # arguments, "fixed": module paths kept at full width}. None for built-in models.
    model_args: Mapping[str, Any] | None = None
    # Folder the genome was read from, to find its mask file. Not serialized, not compared.
    source_dir: Path | None = field(default=None, compare=False, repr=False)

    # ---- derived -----------------------------------------------------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        if is_generic_ref(self.model):
            return generic_spec(self.model, self.model_args, self.num_classes, self.input_size,
                                self.in_channels)
        return get_spec(self.model)

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def groups(self) -> WidthGroups:
        if is_generic_ref(self.model):
            return _generic_groups(self.spec)
        return width_groups(self.model, self.blocks)

    def slot_widths(self) -> dict[str, int]:
        return self.groups.expand(self.widths)

    @property
    def key(self) -> str:
        """Content hash of the architecture: 16 hex digits of SHA-256 over canonical JSON."""
        return _hash(self.arch_dict())

    def arch_dict(self) -> dict:
        d = self.to_dict()
        for k in ("name", "provenance", "family"):
            d.pop(k, None)
        return d

    def mask_path(self) -> Path | None:
        if not (self.sparsity and self.sparsity.mask):
            return None
        return (self.source_dir or Path.cwd()) / self.sparsity.mask.file

    # ---- serialization -----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        if self.name:
            out["name"] = self.name
        out["model"] = self.model
        if self.model_args is not None:
            out["model_args"] = {"kwargs": dict(self.model_args.get("kwargs", {})),
                                 "fixed": list(self.model_args.get("fixed", []))}
        out.update(model=self.model, family=self.family, num_classes=self.num_classes,
                   input={"channels": self.in_channels, "size": self.input_size},
                   widths={g: int(self.widths[g]) for g in self.groups.names})
        out["blocks"] = list(self.blocks) if self.blocks is not None else None
        if self.shortcut_entries:  # only when set, so the keys of every other genome stay as they were
            out["shortcut_entries"] = list(self.shortcut_entries)
        out["sparsity"] = self.sparsity.to_dict() if self.sparsity else None
        if self.provenance:
            out["provenance"] = dict(self.provenance)
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any, source_dir: Path | None = None) -> Genome:
        _check_schema(data)
        if is_generic_ref(data["model"]):
            parse_ref(data["model"])  # a malformed reference: one line naming it
            spec = generic_spec(data["model"], data.get("model_args"), data["num_classes"],
                                data["input"]["size"], data["input"]["channels"])
        elif data.get("model_args") is not None:
            raise GenomeError("model_args", "only generic models (torchvision:, timm:, python:) take "
                                            f"model_args, not {data['model']!r}")
        else:
            spec = get_spec_field(data["model"])
        if data.get("family") not in (None, spec.family):
            raise GenomeError("family", f"{data['family']!r} does not match model {spec.name!r} "
                                        f"(family {spec.family!r})")
        blocks = data.get("blocks")
        sp = data.get("sparsity")
        sparsity = None
        if sp:
            mask = MaskRef(**sp["mask"]) if sp.get("mask") else None
            sparsity = Sparsity(dict(sp.get("density", {})), dict(sp.get("kernel_keep", {})), mask,
                                sp.get("seed"))
        genome = cls(model=spec.name, widths=dict(data["widths"]), num_classes=data["num_classes"],
                     input_size=data["input"]["size"], in_channels=data["input"]["channels"],
                     blocks=_canonical_blocks(spec, blocks),
                     shortcut_entries=tuple(data.get("shortcut_entries") or ()), sparsity=sparsity,
                     name=data.get("name"), provenance=dict(data.get("provenance", {})),
                     source_dir=source_dir,
                     model_args=_model_args(spec))
        validate(genome)
        return genome

    @classmethod
    def from_json(cls, text: str, source_dir: Path | None = None) -> Genome:
        from prune_nas.core.userfiles import parse_json

        try:
            data = parse_json(text, "genome")
        except UserError as e:
            raise GenomeError("", str(e).removeprefix("genome: ")) from None
        return cls.from_dict(data, source_dir)

    def replace(self, **changes) -> Genome:
        """A copy with fields changed, validated again."""
        if "blocks" in changes and changes["blocks"] is not None:
            changes["blocks"] = tuple(changes["blocks"])
        if "shortcut_entries" in changes:
            changes["shortcut_entries"] = tuple(changes["shortcut_entries"] or ())
        g = replace(self, **changes)
        validate(g)
        return g


def get_spec_field(model: str) -> ModelSpec:
    try:
        return get_spec(model)
    except UserError as e:
        raise GenomeError("model", str(e)) from None


def model_spec(model: str) -> ModelSpec:
    """The spec of a built-in model name or of a generic reference (``torchvision:resnet18``, at its defaults:
    1000 classes, 224 px, 3 channels), for what needs a ``--model``'s family or default input size."""
    if isinstance(model, str) and is_generic_ref(model):
        parse_ref(model)
        return generic_spec(model, None, 1000, 224, 3)
    return get_spec(model)


def _model_args(spec: ModelSpec) -> dict | None:
    """The canonical model_args of a generic genome (always both keys), None for built-in models."""
    if spec.family != "generic":
        return None
    return {"kwargs": dict(spec.config["kwargs"]), "fixed": list(spec.config["fixed"])}


def _generic_groups(spec: ModelSpec) -> WidthGroups:
    """A generic model's width groups: one slot per group of its analysis (``core/generic``)."""
    slots = {s.name: s for s in get_family(spec.family).slots(spec, None)}
    names = tuple(slots)
    return WidthGroups(names, {n: (n,) for n in names}, {n: n for n in names}, slots)


def _canonical_blocks(spec: ModelSpec, blocks) -> tuple[int, ...] | None:
    if blocks is None:
        return spec.default_blocks
    return tuple(blocks)


def _hash(d: dict) -> str:
    text = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def schema() -> dict:
    """The genome JSON Schema (``prune_nas/core/schema/genome.schema.json``)."""
    from prune_nas.core.schemas import validator

    return validator("genome").schema


def _check_schema(data: Any) -> None:
    from prune_nas.core.schemas import first_error
    from prune_nas.core.userfiles import check_depth

    check_depth(data, "genome")  # a dict built in memory (a trial attribute) is checked like a file
    bad = first_error(data, "genome")
    if bad is not None:
        where, problem = bad
        raise GenomeError(where or "(top level)", problem)


def validate(genome: Genome) -> None:
    """Structural checks beyond the schema (no file is read). Raises GenomeError naming the field.

    A mask file is checked where files are read: :func:`load_genome` and ``masks.load_masks``."""
    spec = genome.spec
    family = get_family(spec.family)
    if genome.blocks is not None and spec.default_blocks is None:
        raise GenomeError("blocks", f"model {spec.name!r} has no prunable blocks; use null")
    if genome.blocks is not None:
        if len(genome.blocks) != len(spec.default_blocks):
            raise GenomeError("blocks", f"{spec.name} has {len(spec.default_blocks)} stages, got "
                                        f"{len(genome.blocks)}")
        if not family.block_pruning and tuple(genome.blocks) != spec.default_blocks:
            raise GenomeError("blocks", f"{spec.family} models do not support block pruning")
        if any(b < 0 for b in genome.blocks) or sum(genome.blocks) == 0:
            raise GenomeError("blocks", "each stage needs >= 0 blocks and the model at least one")
    if genome.shortcut_entries:
        _validate_shortcut_entries(genome)
    if genome.num_classes < 1:
        raise GenomeError("num_classes", "must be >= 1")
    if genome.in_channels < 1:
        raise GenomeError("input.channels", "must be >= 1")
    if genome.input_size < family.min_input_size(spec):
        raise GenomeError("input.size", f"{spec.name} needs at least {family.min_input_size(spec)} pixels, "
                                        f"got {genome.input_size}")
    groups = genome.groups
    missing = [g for g in groups.names if g not in genome.widths]
    extra = [g for g in genome.widths if g not in groups.members]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if extra:
            parts.append(f"unknown {_few(extra)}")
        raise GenomeError("widths",
                          f"{' and '.join(parts)}; {spec.name} at blocks {list(genome.blocks or [])} "
                                    f"has {len(groups.names)} width groups")
    for g, w in genome.widths.items():
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise GenomeError(f"widths.{g}", f"must be a positive integer, got {w!r}")
    slot_w = groups.expand(genome.widths)
    for slot, limit in family.select_limits(spec, genome.blocks, slot_w).items():
        if slot_w[slot] > limit:
            raise GenomeError(f"widths.{groups.slot_group[slot]}",
                              f"selects {slot_w[slot]} channels but only {limit} exist there")
    if genome.sparsity:
        _validate_sparsity(genome)


def _validate_shortcut_entries(genome: Genome) -> None:
    entries = genome.shortcut_entries
    if list(entries) != sorted(set(entries)):
        raise GenomeError("shortcut_entries",
                          f"must be stage numbers in increasing order, got {list(entries)}")
    if genome.blocks is None:
        raise GenomeError("shortcut_entries", f"model {genome.model!r} has no prunable blocks")
    family = get_family(genome.family)
    for s in entries:
        if not 1 <= s <= len(genome.blocks):
            raise GenomeError("shortcut_entries", f"stages are 1..{len(genome.blocks)}, got {s}")
        problem = family.shortcut_entry_problem(genome.spec, genome.blocks, s)
        if problem:
            raise GenomeError("shortcut_entries", problem)


def _few(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")


def _validate_sparsity(genome: Genome) -> None:
    sp = genome.sparsity
    convs = conv_ops(genome)
    for name, value in sp.density.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise GenomeError(f"sparsity.density.{name}", f"must be a number in (0, 1], got {value!r}")
        if name not in convs:
            raise GenomeError(f"sparsity.density.{name}", f"no conv layer of that name in {genome.model}")
    if sp.seed is not None and (isinstance(sp.seed, bool) or not isinstance(sp.seed, int)
                                or not 0 <= sp.seed < 2**63):
        raise GenomeError("sparsity.seed", f"must be an integer in [0, 2^63), got {sp.seed!r}")
    n_stages = max(op.stage for op in convs.values())
    for stage, rows in sp.kernel_keep.items():
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
                   for row in rows for v in row):
            raise GenomeError(f"sparsity.kernel_keep.{stage}", "keep probabilities must be numbers in [0, 1]")
        if not stage.isdigit() or not 1 <= int(stage) <= n_stages:
            raise GenomeError(f"sparsity.kernel_keep.{stage}", f"stages are 1..{n_stages}")


# ---- construction helpers ----------------------------------------------------------------------------------
def base_genome(model: str, num_classes: int | None = None, input_size: int | None = None,
                in_channels: int | None = None, width_mult: float = 1.0,
                blocks: tuple[int, ...] | None = None, model_args: Mapping[str, Any] | None = None) -> Genome:
    """The unpruned base model as a genome, optionally with every width scaled by ``width_mult``.

    Generic models (``torchvision:resnet18``) default to 1000 classes at 224 pixels, 3 channels;
    ``model_args``: {"kwargs": factory keyword arguments, "fixed": module paths kept at full width}."""
    if is_generic_ref(model):
        parse_ref(model)
        spec = generic_spec(model, model_args, num_classes or 1000, input_size or 224, in_channels or 3)
        model_args = _model_args(spec)
    elif model_args is not None:
        raise GenomeError("model_args", f"only generic models take model_args, not {model!r}")
    else:
        spec = get_spec(model)
    blocks = tuple(blocks) if blocks is not None else spec.default_blocks
    groups = _generic_groups(spec) if spec.family == "generic" else width_groups(spec.name, blocks)
    widths = {g: max(1, int(round(w * width_mult))) for g, w in groups.base_widths().items()}
    genome = Genome(model=spec.name, widths=widths, num_classes=num_classes or spec.num_classes,
                    input_size=input_size or spec.input_size, in_channels=in_channels or spec.in_channels,
                    blocks=blocks, name=spec.name if width_mult == 1.0 else f"{spec.name}-x{width_mult:g}",
                    model_args=model_args)
    if width_mult != 1.0:
        genome = replace(genome, widths=fit_selects(genome, widths))
    validate(genome)
    return genome


def fit_selects(genome: Genome, widths: dict[str, int]) -> dict[str, int]:
    """``widths`` (per width group; a new dict) with every selection clipped to the channels that exist.

    A selection (pre-activation ResNets, DenseNets) reads channels of a tensor other groups produce; widths
    scaled and rounded independently can make it read one more than its producers keep. Every generator of
    scaled widths (uniform, random, guided, search spaces) calls this before building a genome."""
    family = get_family(genome.family)
    groups = genome.groups
    limits = family.select_limits(genome.spec, genome.blocks, groups.expand(widths))
    out = dict(widths)
    for slot, limit in limits.items():
        g = groups.slot_group[slot]
        out[g] = min(out[g], limit)
    return out


def load_genome(path: str | os.PathLike) -> Genome:
    """Read and validate a genome file."""
    from prune_nas.core.userfiles import read_text

    path = Path(path)
    text = read_text(path, "genome file")
    try:
        genome = Genome.from_json(text, source_dir=path.resolve().parent)
        if genome.sparsity is not None and genome.sparsity.mask is not None:
            load_masks(genome)  # the mask file exists, matches its hash and the conv shapes
        return genome
    except GenomeError as e:
        raise GenomeError(e.field, f"{e.problem} (in {path})") from None


def save_genome(genome: Genome, path: str | os.PathLike) -> Path:
    """Write a genome atomically (temp file + rename)."""
    path = Path(path)
    atomic_write_text(path, genome.to_json() + "\n")
    return path


def atomic_write_text(path: Path, text: str) -> None:
    from prune_nas.core.atomic import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def random_genome(model: str, rng, min_fraction: float = 0.05, max_fraction: float = 1.0,
                  **base_kwargs) -> Genome:
    """A valid genome with every width group at a uniform random fraction of its base width.

    ``rng`` is a ``random.Random`` (or anything with ``.uniform``). Selections are clipped to the channels
    that exist, so the result always validates.
    """
    base = base_genome(model, **base_kwargs)
    base_w = base.groups.base_widths()
    widths = {g: max(1, int(round(w * rng.uniform(min_fraction, max_fraction)))) for g, w in base_w.items()}
    return replace(base, name=None, widths=fit_selects(base, widths))
