"""Where prune-nas reads its bundled data and writes its outputs.

Bundled data (the named-genome library, search spaces, experiment specs) ships inside the package and is read
through ``importlib.resources``; in a checkout, ``prune_nas/bundled/*`` are links to the top-level
``artifacts/genomes``, ``search_spaces`` and ``experiments`` folders, so there is one copy.

Outputs (store, runs, studies, data, discovered / guided / transferred genomes, patterns) go under
``$PRUNE_NAS_HOME``, else ``artifacts/`` in the working folder: never into the installed package.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def home() -> Path:
    """The root of every output: ``$PRUNE_NAS_HOME``, else ``./artifacts``."""
    env = os.environ.get("PRUNE_NAS_HOME")
    return Path(env) if env else Path("artifacts")


def output_dir(*parts: str) -> Path:
    """A folder under :func:`home` (not created)."""
    return home().joinpath(*parts)


def bundled_dir(kind: str) -> Path:
    """A folder of data shipped with the package: ``genomes``, ``search_spaces`` or ``experiments``."""
    return Path(str(resources.files("prune_nas").joinpath("bundled", kind)))
