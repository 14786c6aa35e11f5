"""Reading files a user names (genomes, patterns, experiment specs, search spaces, mask .npz, weights .pt).

Every such file is hostile: it may be a device (``/dev/zero`` never ends), a folder, huge, not UTF-8, nested a
million levels deep, hold ``NaN`` or ``1e400``, or be a YAML alias bomb (a few lines that expand to
gigabytes).
This module is the one place that reads them, and each of those ends in one clear :class:`UserError` line:

* only regular files, at most :data:`MAX_TEXT_BYTES` (text) or :data:`MAX_BINARY_BYTES` (arrays, weights);
* text must be UTF-8; JSON and YAML nest at most :data:`MAX_DEPTH` levels;
* JSON numbers must be finite (``NaN``, ``Infinity`` and ``1e400`` are refused), integers at most
  :data:`MAX_INT_DIGITS` digits;
* YAML aliases (``*name``) are refused: specs and spaces never need them, and they are how a bomb expands.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from prune_nas.core.errors import UserError

MAX_TEXT_BYTES = 16 << 20  # genomes, patterns, specs and spaces are kilobytes; 16 MiB is generous
MAX_BINARY_BYTES = 8 << 30  # inherited weights of an ImageNet VGG are ~0.5 GiB
MAX_DEPTH = 64  # the deepest legitimate file (a genome's kernel_keep) nests 5 levels
MAX_INT_DIGITS = 30  # larger than any width, seed or count; far below Python's 4300-digit parse limit


def checked_file(path: str | os.PathLike, what: str, hint: str = "",
                 max_bytes: int = MAX_BINARY_BYTES) -> Path:
    """``path`` if it is a regular file of at most ``max_bytes``, else a UserError (not found, a folder, a
    device or pipe, too large). Callers that open the file themselves (numpy, torch) check it here first."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}{f' ({hint})' if hint else ''}") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{what} {path} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{what} {path} is not a regular file (a device, pipe or socket)")
    if st.st_size > max_bytes:
        raise UserError(f"{what} {path} is {st.st_size:,} bytes; the limit is {max_bytes:,}")
    return path


def read_bytes(path: str | os.PathLike, what: str, hint: str = "", max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of a checked file (reading stops past ``max_bytes`` in case it grew after the check)."""
    path = checked_file(path, what, hint, max_bytes)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise UserError(f"{what} {path} is larger than the limit of {max_bytes:,} bytes")
    return data


def read_text(path: str | os.PathLike, what: str, hint: str = "", max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The file's UTF-8 text, or a UserError saying ``<what> not found: <path>`` (plus ``hint``), not a
    regular file, too large, or not UTF-8."""
    data = read_bytes(path, what, hint, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = data[e.start:e.start + 1]
        raise UserError(f"{what} {path} is not UTF-8 text (byte {e.start}: {bad!r})") from None


def check_depth(obj: Any, where: str, max_depth: int = MAX_DEPTH) -> Any:
    """``obj`` if its lists and dicts nest at most ``max_depth`` levels (checked without recursion)."""
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            if depth > max_depth:
                raise UserError(f"{where}: nested more than {max_depth} levels deep")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children)
    return obj


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of range (numbers must be finite)")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits is out of range")
    return int(text)


def parse_json(text: str, where: str) -> Any:
    """Strict JSON (finite numbers, bounded integers and nesting), or a UserError starting with ``where``."""
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                          parse_int=_bounded_int)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except ValueError as e:
        raise UserError(f"{where}: {e}") from None
    except RecursionError:
        raise UserError(f"{where}: nested more than {MAX_DEPTH} levels deep") from None
    return check_depth(data, where)


def read_state_dict(path: str | os.PathLike, what: str = "weights") -> dict:
    """A ``.pt`` state dict from a checked regular file: ``torch.load(weights_only=True)`` (tensors only, no
    code runs), every value a tensor, else a UserError."""
    import torch

    path = checked_file(path, what)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (not a torch file, damaged, or holding more than tensors)
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise UserError(f"cannot read {what} {path}: not a torch state dict of tensors ({first})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{what} {path} are not a state dict of tensors")
    return state


def read_json(path: str | os.PathLike, what: str, hint: str = "") -> Any:
    """Parsed JSON from a checked file (see :func:`parse_json`)."""
    return parse_json(read_text(path, what, hint), f"{what} {path}")


def _no_alias_loader():
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """PyYAML's safe loader, refusing aliases: a handful of them nested is a 'billion laughs' bomb."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed here",
                                                  event.start_mark)
            return super().compose_node(parent, index)

    return NoAliasLoader


def read_yaml(path: str | os.PathLike, what: str, hint: str = "") -> Any:
    """Parsed YAML (no aliases, bounded nesting, finite numbers), or a UserError naming the file, line and
    column of the problem."""
    import yaml

    text = read_text(path, what, hint)
    try:
        data = yaml.load(text, Loader=_no_alias_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise UserError(f"{path}: nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as e:  # an integer beyond Python's digit limit
        raise UserError(f"{path}: {str(e).splitlines()[0]}") from None
    check_depth(data, str(path))
    _check_numbers(data, str(path))
    return data


def _check_numbers(obj: Any, where: str) -> None:
    """YAML reads ``.nan``, ``.inf`` and ``1e400`` as floats: refuse them as JSON parsing does, naming the
    field (``protocol.lr``, ``rows[0].ratio``) where the number sits."""
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        at, item = stack.pop()
        field = f"{at}: " if at else ""
        if isinstance(item, float) and not math.isfinite(item):
            raise UserError(f"{where}: {field}{item} is not allowed (numbers must be finite)")
        if isinstance(item, int) and not isinstance(item, bool) and abs(item) >= 10 ** MAX_INT_DIGITS:
            raise UserError(
                f"{where}: {field}an integer of more than {MAX_INT_DIGITS} digits is out of range"
            )
        if isinstance(item, dict):
            for key, value in item.items():
                shown = str(key) if str(key).isprintable() else repr(str(key))  # keep the message one line
                name = f"{at}.{shown}" if at else shown
                stack.append((at, key))
                stack.append((name[:200], value))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{at}[{i}]", value) for i, value in enumerate(item))
