"""Results on disk: one JSON record per training run, named by the run spec's canonical hash.

Layout under the root (``$PRUNE_NAS_HOME/store``, else ``artifacts/store`` relative to the working folder)::

    runs/<key>.json      the record: spec, effective protocol, curve, accuracy, cost, versions, device
    weights/<key>.pt     final weights, only when asked for (``--save-weights``)
    checkpoints/<key>.pt a run's full state while it trains (a killed run resumes from it), then deleted

Records are written atomically (temp file + rename), so a reader never sees half a record and an interrupted
run leaves nothing behind; a finished key is reused instead of trained again.

>>> import tempfile
>>> s = Store(tempfile.mkdtemp())
>>> s.get("0123456789abcdef") is None
True
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterator

from prune_nas.core.genome import atomic_write_text
from prune_nas.core.paths import output_dir


def default_root() -> Path:
    return output_dir("store")


class Store:
    """A folder of run records keyed by ``RunSpec.key``."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def path_for(self, key: str) -> Path:
        return self.root / "runs" / f"{key}.json"

    def weights_path(self, key: str) -> Path:
        return self.root / "weights" / f"{key}.pt"

    def checkpoint_path(self, key: str) -> Path:
        """A run's checkpoint while it trains; deleted once its record is written."""
        return self.root / "checkpoints" / f"{key}.pt"

    def __contains__(self, key: str) -> bool:
        return self.path_for(key).exists()

    def get(self, key: str) -> dict | None:
        """The record stored under ``key``, or None. An unreadable file counts as absent (it is rewritten)."""
        try:
            return json.loads(self.path_for(key).read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return None

    def put(self, record: dict) -> Path:
        """Write ``record`` (which carries its ``key``) atomically; returns its path."""
        path = self.path_for(record["key"])
        atomic_write_text(path, json.dumps(_finite(record), indent=1, sort_keys=True, allow_nan=False) + "\n")
        return path

    def keys(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "runs").glob("*.json"))

    def records(self) -> Iterator[dict]:
        for key in self.keys():
            rec = self.get(key)
            if rec is not None:
                yield rec


def _finite(obj):
    """Non-finite floats (a failed run's NaN loss) become null, so records stay strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
