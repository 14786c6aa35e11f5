"""The JSON Schemas shipped with the package (``core/schema/<name>.schema.json``: genome, space, spec) and
their first violation as one line naming the field.

One validator and one wording for every file a user writes. Every number must first be finite (no NaN, no
infinity: YAML's ``.nan`` passes every bound); then JSON Schema Draft 2020-12 checks the rest, with
``integer`` a Python int (not ``2.0``, not ``true``), so the bounds mean what they say. A subschema may word
its own message in ``x-messages``: per keyword (``{"pattern": "use letters, ..."}``) or for any keyword
(``"*"``); the value follows as ", got <value>" except for ``not`` and ``minProperties``, whose messages
stand alone.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from functools import lru_cache
from importlib import resources
from typing import Any

NAMES = ("genome", "space", "spec")

_TYPES = {"integer": "an integer", "number": "a number", "string": "a string", "array": "a list",
          "object": "a mapping", "boolean": "true or false", "null": "empty"}
_BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
_STANDALONE = ("not", "minProperties")  # their x-messages say the whole problem


@lru_cache(maxsize=None)
def validator(name: str):
    """The validator of schema ``name`` (one of :data:`NAMES`); its ``.schema`` is the schema itself."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    types = base.TYPE_CHECKER.redefine("integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool))
    text = resources.files("prune_nas.core.schema").joinpath(f"{name}.schema.json").read_text()
    return jsonschema.validators.extend(base, type_checker=types)(json.loads(text))


def first_error(data: Any, name: str) -> tuple[str, str] | None:
    """The shallowest violation of schema ``name`` by ``data`` as ``(field, problem)``, or None.

    >>> space = {"name": "x", "model": "vgg11", "dataset": "digits",
    ...          "budget": {"kind": "epochs", "epochs": 0}, "objective": {"maximize": "accuracy"},
    ...          "parameters": {"stage_multiplier": {"range": [0.5, 1]}}}
    >>> first_error(space, "space")
    ('budget.epochs', 'must be >= 1, got 0')
    >>> first_error({**space, "budget": "epochs", "seed": 2}, "space")[1].split(";")[0]
    'unknown key (did you mean seeds?)'
    """
    bad = _non_finite(data)
    if bad is not None:  # also where the schema takes any value (a free-form note)
        return field(bad), "must be a finite number"
    errors = sorted(validator(name).iter_errors(data),
                    key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]))
    if not errors:
        return None
    at, problem = _explain(errors[0])
    return field(at), problem


def field(path) -> str:
    """``["uniform", 0]`` -> ``uniform[0]``; ``["budget", "kind"]`` -> ``budget.kind``; a key that is not a
    plain name (a user's, e.g. with a newline) is quoted, so the message stays one line."""
    out = ""
    for p in path:
        p = p if isinstance(p, int) or re.fullmatch(r"[\w*.-]+", str(p), re.ASCII) else repr(p)
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _non_finite(value: Any, at: tuple = ()) -> list | None:
    """The path of the first NaN or infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return list(at)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = _non_finite(v, (*at, k))
        if found is not None:
            return found
    return None


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _explain(e) -> tuple[list, str]:
    """A schema error as (path, problem)."""
    at, v, kw, want = list(e.absolute_path), e.instance, e.validator, e.validator_value
    own = (e.schema.get("x-messages") or {}) if isinstance(e.schema, dict) else {}
    got = f", got {_short(v)}"
    message = own.get(kw, own.get("*"))
    if message:
        return at, message if kw in _STANDALONE else message + got
    if kw in ("anyOf", "oneOf"):
        # Errors inside a branch of the value's own type say more than "matches no branch".
        inner = [c for c in e.context if c.validator != "type" or c.relative_path]
        if inner:
            return _explain(min(inner, key=lambda c: len(c.absolute_path)))
        types = [t for c in e.context for t in ([c.validator_value] if isinstance(c.validator_value, str)
                                                 else c.validator_value)]
        return at, f"must be {' or '.join(dict.fromkeys(_TYPES.get(t, t) for t in types))}{got}"
    if kw == "additionalProperties":
        allowed = list(e.schema.get("properties", {}))
        key = min((k for k in v if k not in allowed), key=str)
        close = difflib.get_close_matches(str(key), allowed, n=1)
        return at + [key], (f"unknown key{f' (did you mean {close[0]}?)' if close else ''}; "
                            f"allowed: {', '.join(allowed)}")
    if kw == "required":
        return at + [next(k for k in want if k not in v)], "missing"
    if kw == "const":
        return at, f"must be {want!r}{got}"
    if kw == "enum":
        return at, f"must be one of {', '.join(map(str, want))}{got}"
    if kw == "type":
        types = [want] if isinstance(want, str) else want
        problem = f"must be {' or '.join(_TYPES.get(t, t) for t in types)}{got}"
        if isinstance(v, str) and _looks_numeric(v):
            problem += " (YAML reads a number like 1e-3 as text: write 1.0e-3)"
        return at, problem
    if kw in _BOUNDS:
        return at, f"must be {_BOUNDS[kw]} {want:g}{got}"
    if kw == "minItems":
        return at, f"needs at least {want} item{'s' * (want != 1)}"
    if kw in ("maxItems", "maxProperties"):
        return at, f"takes at most {want} entries, got {len(v)}"
    if kw == "uniqueItems":
        return at, f"has a repeated item{got}"
    if kw == "minLength":
        return at, "must not be empty"
    if kw == "maxLength":
        return at, f"is longer than {want} characters"
    return at, e.message


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
