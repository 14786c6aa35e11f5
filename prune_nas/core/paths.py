"""Where prune-nas reads its bundled data and writes its outputs.

Bundled data (the named-genome library, search spaces, experiment specs) ships inside the package and is read
through ``importlib.resources``; in a checkout, ``prune_nas/bundled/*`` are links to the top-level
``artifacts/genomes``, ``search_spaces`` and ``experiments`` folders, so there is one copy.

Outputs (store, runs, studies, data, discovered / guided / transferred genomes, patterns) go under
``$PRUNE_NAS_HOME``, else ``artifacts/`` in the working folder: never into the installed package.
"""

from __future__ import annotations

import os
import re
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


# A name that becomes one path component: letters, digits, '.', '_', '-', '+'; no leading '.', at most 128.
_SLUG = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+-]{0,127}")


def slug(name: object, what: str) -> str:
    """``name`` if it is safe as a single file or folder name, else a UserError naming ``what``.

    Every name that comes from a user or a user's file (a study, an experiment spec, a genome's provenance)
    and becomes part of an output path goes through here, so none can climb out of its folder ('..', '/')
    or hide itself ('.x')."""
    from prune_nas.core.errors import UserError

    text = str(name)
    if not isinstance(name, (str, int)) or not _SLUG.fullmatch(text):
        raise UserError(f"{what} {text[:80]!r} cannot be used in a file name: use letters, digits, '.', '_', "
                        "'-' or '+' (not starting with '.'), at most 128 characters")
    return text


def under(root: str | os.PathLike, *parts: str) -> Path:
    """``root/parts...``, checked to stay inside ``root`` (each part is a :func:`slug` already)."""
    from prune_nas.core.errors import UserError

    base = Path(root)
    path = base.joinpath(*parts)
    if not path.resolve().is_relative_to(base.resolve()):
        raise UserError(f"{path} is outside {base}")
    return path
