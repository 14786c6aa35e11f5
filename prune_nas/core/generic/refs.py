"""Model references: parse ``torchvision:<name>``, ``timm:<name>``, ``python:<module>:<callable>`` and call
the factory they name.

>>> parse_ref("torchvision:resnet18")
ModelRef(source='torchvision', name='resnet18', attr=None)
>>> is_generic_ref("resnet56"), is_generic_ref("timm:resnet18")
(False, True)
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prune_nas.core.errors import GenomeError

if TYPE_CHECKING:
    from torch import nn

SOURCES = ("torchvision", "timm", "python")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


@dataclass(frozen=True)
class ModelRef:
    source: str  # torchvision | timm | python
    name: str  # model name, or the module path for python:
    attr: str | None = None  # the factory's name inside the module (python: only)

    def __str__(self) -> str:
        return f"{self.source}:{self.name}" + (f":{self.attr}" if self.attr else "")


def is_generic_ref(model: str) -> bool:
    """Whether ``model`` names a generic model (``source:...``) rather than a built-in one."""
    return isinstance(model, str) and model.split(":", 1)[0] in SOURCES and ":" in model


def parse_ref(model: str) -> ModelRef:
    """Parse a reference; a malformed one is a GenomeError on ``model``."""
    parts = model.split(":")
    source = parts[0]
    if source not in SOURCES:
        raise GenomeError("model", f"{model!r}: a model reference starts with one of {', '.join(SOURCES)}")
    if source == "python":
        if len(parts) != 3 or not all(_NAME.match(p) for p in parts[1:]):
            raise GenomeError("model", f"{model!r}: expected python:<module>:<callable>, e.g. "
                                       "python:mypackage.models:make_net")
        return ModelRef(source, parts[1], parts[2])
    if len(parts) != 2 or not _NAME.match(parts[1]):
        raise GenomeError("model", f"{model!r}: expected {source}:<model name>")
    return ModelRef(source, parts[1])


def available(source: str) -> list[str]:
    """The model names a source offers (classification models for torchvision)."""
    if source == "torchvision":
        import torchvision

        return sorted(torchvision.models.list_models(module=torchvision.models))
    if source == "timm":
        try:
            import timm
        except ImportError:
            raise GenomeError("model", "timm is not installed: pip install 'prune-nas[timm]'") from None
        return list(timm.list_models())
    raise GenomeError("model", f"cannot list {source!r} models; sources that list: torchvision, timm")


def factory(ref: ModelRef) -> Callable[..., nn.Module]:
    """The callable that builds the model (imports user code for ``python:`` references)."""
    if ref.source == "torchvision":
        import torchvision

        names = available("torchvision")
        if ref.name not in names:
            raise GenomeError("model", f"torchvision has no classification model {ref.name!r}"
                                       + _hint(ref.name, names)
                                       + "; `prune-nas genome list --models torchvision`")
        return lambda **kw: torchvision.models.get_model(ref.name, **kw)
    if ref.source == "timm":
        names = available("timm")
        if ref.name not in names:
            raise GenomeError("model", f"timm has no model {ref.name!r}" + _hint(ref.name, names))
        import timm

        return lambda **kw: timm.create_model(ref.name, pretrained=False, **kw)
    try:
        module = importlib.import_module(ref.name)
    except Exception as e:  # noqa: BLE001 - user code: any failure is one line
        raise GenomeError("model",
                          f"cannot import module {ref.name!r} for {ref}: {type(e).__name__}: {e}") from None
    fn = getattr(module, ref.attr, None)
    if not callable(fn):
        raise GenomeError("model", f"module {ref.name!r} has no callable {ref.attr!r}")
    return fn


def _hint(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def call_kwargs(ref: ModelRef, fn: Callable, kwargs: Mapping[str, Any], num_classes: int) -> dict:
    """The factory's keyword arguments: the genome's, plus ``num_classes`` where the factory takes it."""
    out = dict(kwargs)
    if "num_classes" not in out:
        takes = ref.source != "python"
        if not takes:
            try:
                params = inspect.signature(fn).parameters
                takes = "num_classes" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
            except (TypeError, ValueError):
                takes = False
        if takes:
            out["num_classes"] = num_classes
    return out


def instantiate(model: str, kwargs: Mapping[str, Any], num_classes: int) -> nn.Module:
    """A freshly initialised model for the reference (on the current default device)."""
    ref = parse_ref(model)
    fn = factory(ref)
    try:
        net = fn(**call_kwargs(ref, fn, kwargs, num_classes))
    except Exception as e:  # noqa: BLE001 - user code / bad kwargs: one line
        raise GenomeError("model_args", f"{model}({_show(kwargs)}) failed: {type(e).__name__}: {e}") from None
    from torch import nn

    if not isinstance(net, nn.Module):
        raise GenomeError("model", f"{model} returned {type(net).__name__}, not a torch.nn.Module")
    return net


def _show(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
