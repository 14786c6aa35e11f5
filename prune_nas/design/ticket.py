"""Winning-ticket initialisation (Frankle & Carbin, ICLR 2019), for the paper's Section 6 comparison.

A pruned genome found by ``discover`` can be trained from the large model's *original* initialisation instead
of a fresh one. Nothing of that initialisation is stored: it is re-created from what the genome's provenance
records, ``pruned_from.large_model.init`` (the large model's seed and genome: ``discover`` initialises the
large model with :func:`prune_nas.design.discover.large_model_init`, so the same call gives the same weights,
bit for bit on CPU), and then

* structured (channel) pruning: sliced to the kept channels by the same channel surgery that produced the
  inherited weights (``kept_channels``, which ``methods.surgery.shrink`` records), BN parameters included;
* unstructured (weight) pruning: the whole initialisation, which ``runs.init_model`` multiplies by the
  genome's exact mask (the reference's ``lottery_ticket.py`` loads the full init and masks it too).

:func:`attach_ticket` writes those weights beside the genome (``<name>.ticket.pt``) and names them in
``provenance["ticket"]`` with what identifies them (seed, large genome's key, kept channels' or mask's hash),
which a ``RunSpec(init="winning_ticket")`` run key includes.

The reference code's structured lottery ticket (``cifar/lottery-ticket/l1-norm-pruning``) keeps the full-size
model and zeroes the pruned filters (a mask); slicing them away instead trains the same kept filters from the
same initial values, without the removed channels' BN shifts (a zeroed filter's BN still adds ``relu(beta)``
to the next layer there).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from prune_nas.core.errors import UserError
from prune_nas.core.genome import Genome


def _init_record(genome: Genome) -> tuple[Genome, int]:
    """The large genome and seed recorded in ``provenance.pruned_from.large_model.init``."""
    init = ((genome.provenance.get("pruned_from") or {}).get("large_model") or {}).get("init")
    if not isinstance(init, dict) or "seed" not in init or "genome" not in init:
        raise UserError(f"genome {genome.name or genome.key} does not record the large model's "
                        "initialisation (provenance.pruned_from.large_model.init); prune it with `prune-nas "
                        "discover`")
    return Genome.from_dict(init["genome"]), int(init["seed"])


def _kept_hash(genome: Genome) -> str:
    """What selects the ticket's weights from the initialisation: the mask file's hash for a sparse genome,
    else a hash of the kept channel ids."""
    if genome.sparsity is not None:
        if genome.sparsity.mask is None:
            raise UserError(f"sparse genome {genome.name or genome.key} names no exact mask file; a winning "
                            "ticket needs the mask the pruning found")
        return genome.sparsity.mask.sha256
    kept = genome.provenance.get("kept_channels")
    if not isinstance(kept, dict):
        raise UserError(f"genome {genome.name or genome.key} records no kept channels "
                        "(provenance.kept_channels); a winning ticket needs a genome pruned by channel "
                        "surgery or by a weight mask")
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def ticket_state(genome: Genome) -> dict[str, torch.Tensor]:
    """The winning-ticket weights of ``genome``: the large model's original initialisation, re-created and
    sliced to the kept channels (a dense genome) or whole (a sparse one: the mask is applied at load)."""
    from prune_nas.design.discover import large_model_init
    from prune_nas.methods.surgery import shrink, state_of

    large, seed = _init_record(genome)
    state = state_of(large_model_init(large, seed))
    _kept_hash(genome)  # the genome says which weights it keeps
    if genome.sparsity is not None:
        if dict(large.widths) != dict(genome.widths) or large.blocks != genome.blocks:
            raise UserError(f"sparse genome {genome.name or genome.key} has other widths than its large "
                            "model; a winning ticket of a sparse genome masks the whole initialisation")
        return state
    small, sliced = shrink(large, state, genome.provenance["kept_channels"])
    if dict(small.widths) != dict(genome.widths) or small.blocks != genome.blocks:
        raise UserError(f"genome {genome.name or genome.key}: its kept channels do not give its widths (a "
                        "method that also removes blocks or rewrites layers has no winning ticket)")
    return sliced


def attach_ticket(genome: Genome, path: str | Path) -> Genome:
    """Write the winning-ticket weights to ``path`` (a ``.pt`` beside the genome file) and return the genome
    naming them in ``provenance["ticket"]``. Re-creating them takes one model build, so they are written
    again on every call rather than trusted from an earlier file."""
    from prune_nas.core.atomic import atomic_write
    from prune_nas.core.masks import file_sha256

    path = Path(path)
    large, seed = _init_record(genome)
    state = ticket_state(genome)
    atomic_write(path, lambda tmp: torch.save(state, tmp), ".pt")
    record = {"file": path.name, "sha256": file_sha256(path), "seed": seed, "large_genome": large.key,
              "kept": _kept_hash(genome)}
    return genome.replace(provenance={**genome.provenance, "ticket": record}, source_dir=path.parent)
