"""Model families and the registry of named base models.

>>> from prune_nas.core.arch import list_models
>>> "resnet56" in list_models("resnet*")
True
"""

from __future__ import annotations

import difflib
import fnmatch

from prune_nas.core.arch import densenet, preresnet, resnet, vgg
from prune_nas.core.arch._base import Family, ModelSpec, Op, Slot
from prune_nas.core.errors import UserError
from prune_nas.core.generic.family import GenericFamily

__all__ = ["Family", "ModelSpec", "Op", "Slot", "FAMILIES", "MODELS", "get_family", "get_spec", "list_models"]

FAMILIES: dict[str, Family] = {f.name: f for f in (vgg.VGG(), resnet.ResNet(), preresnet.PreResNet(),
                                                   densenet.DenseNet())}
FAMILIES[GenericFamily.name] = GenericFamily()  # any nn.Module: torchvision:, timm:, python: references
MODELS: dict[str, ModelSpec] = {s.name: s for mod in (vgg, resnet, preresnet, densenet) for s in mod.specs()}


def list_models(pattern: str = "*") -> list[str]:
    return [name for name in MODELS if fnmatch.fnmatch(name, pattern)]


def get_spec(name: str) -> ModelSpec:
    if not isinstance(name, str):  # from a user's file: a list or a number is not a model name
        raise UserError(f"a model name must be a string, got {name!r}")
    try:
        return MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, MODELS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"unknown model {name!r}{hint}; `prune-nas genome list` shows them all") from None


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UserError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}") from None
