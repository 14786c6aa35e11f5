"""Reading files a user names (genomes, experiment specs, search spaces): failures end in one clear line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prune_nas.core.errors import UserError


def read_text(path: str | os.PathLike, what: str, hint: str = "") -> str:
    """The file's text, or a UserError saying ``<what> not found: <path>`` (plus ``hint``)."""
    path = Path(path)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}{f' ({hint})' if hint else ''}") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror}") from None


def read_yaml(path: str | os.PathLike, what: str, hint: str = "") -> Any:
    """Parsed YAML, or a UserError naming the file, line and column of the syntax error."""
    import yaml

    text = read_text(path, what, hint)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
