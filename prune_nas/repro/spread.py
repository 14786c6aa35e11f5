"""An experiment spec's independent runs spread over the devices of a machine (``prune-nas run --devices``).

A spec's units of work form independent groups: a comparison row's seed (prune, then train the unpruned model
and each budget), a curve row's pruning ratio, a pattern row. Groups go to a pool of processes, one per device
slot (``training.parallel.map_on_devices``), each running the ordinary runner on the groups it is handed;
processes share the store (atomic records) and merge what they did into the manifest under a file lock. Groups
run in two waves: the first group of each large model (the model a method prunes, trained once per seed and
reused from the store) before the rest, so two processes do not train the same large model at once. A last
pass in this process then walks the whole spec, reusing every finished run, and writes the manifest in the
spec's order, complete -- the same manifest a single process would have written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prune_nas.core.genome import atomic_write_text


def groups_of(plan: Any) -> list[tuple]:
    """The plan's independent groups in the runner's order: (row,) for pattern rows, (row, seed) for
    comparison rows, (row, ratio) for curve rows."""
    kind = plan.spec.kind
    out: list[tuple] = []
    for row in plan.rows:
        if kind == "comparison":
            out += [(row.index, seed) for seed in row.seeds]
        elif kind in ("widths", "kernels"):
            out.append((row.index,))
        else:
            out += [(row.index, ratio) for ratio in row.ratios]
    return out


def waves(plan: Any) -> list[list[tuple]]:
    """The groups in two waves: the first group that trains each large model, then the others."""
    rows = {r.index: r for r in plan.rows}
    first, rest, seen = [], [], set()
    for g in groups_of(plan):
        r = rows[g[0]]
        seeds = (g[1],) if plan.spec.kind == "comparison" else tuple(r.seeds)
        large = (r.model, r.dataset, r.width, r.method, seeds)
        (rest if large in seen else first).append(g)
        seen.add(large)
    return [w for w in (first, rest) if w]


def _run_group(job: tuple, device: str) -> str:
    from prune_nas.repro.experiments import run_experiment

    spec, scale, group, kw = job
    run_experiment(spec, scale, device=device, progress=False, groups={group}, **kw)
    return device


def run_spread(spec: Any, scale: str, devices: Sequence[str], *, progress: bool = True,
               **kw: Any) -> tuple[Path, str]:
    """Run ``spec`` at ``scale`` over ``devices`` (one process per entry); returns the manifest path and the
    MPS status. ``kw`` are :func:`run_experiment`'s options (store and runs_root as paths, engine, ...)."""
    from prune_nas.repro.experiments import run_dir, run_experiment
    from prune_nas.training.parallel import map_on_devices

    started = time.perf_counter()
    path = run_dir(spec, scale, kw.get("runs_root")) / "manifest.json"
    before = _read(path)
    earlier = before.get("wall_time_s", 0.0) if before.get("spec", {}).get("sha256") == spec.sha256() else 0.0
    status = "not used"
    for wave in waves(spec.plan(scale)):
        _, status = map_on_devices(_run_group, [(spec, scale, g, kw) for g in wave], devices)
    trained = {_identity(e) for e in _read(path).get("runs", []) if not e.get("reused")}
    path = run_experiment(spec, scale, device=devices[0], progress=progress, **kw)
    # The last pass found every run finished; what the device workers trained in this command is not reused.
    m = _read(path)
    for e in m["runs"]:
        if _identity(e) in trained:
            e["reused"] = False
    m["progress"]["reused"] = sum(1 for e in m["runs"] if e.get("reused"))
    m["wall_time_s"] = round(earlier + time.perf_counter() - started, 2)
    m["compute_time_s"] = round(sum(float(e.get("wall_time_s") or 0)
                                    for e in m["runs"] if not e.get("reused")), 2)
    m["hardware"]["devices"] = list(devices)
    atomic_write_text(path, json.dumps(m, indent=1) + "\n")
    Path(f"{path}.lock").unlink(missing_ok=True)
    return path, status


def _identity(entry: dict) -> tuple:
    return tuple(str(entry.get(f)) for f in ("role", "row", "seed", "ratio", "budget", "key"))


def _read(path: Path) -> dict:
    from prune_nas.repro.experiments import _previous_manifest

    return _previous_manifest(path)
