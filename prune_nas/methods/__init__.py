"""Pruning methods: one module per method, each registering a :class:`Method` subclass (see ``_base.py``).

Importing this package fills the registry; ``get_method(name)`` / ``list_methods()`` read it. Shared pieces:
``surgery`` (kept channels -> smaller genome + inherited weights), ``_activations`` (feature-map sampling for
ThiNet and regression). ``prune_nas.design.discover`` runs a method end to end (train, prune, write).

May import: ``prune_nas.training``, ``prune_nas.core``.

>>> from prune_nas.methods import get_method
>>> get_method("slimming").target
'automatic'
"""

from __future__ import annotations

from prune_nas.methods import baselines, l1norm, magnitude, regression, sfp, slimming, sss, thinet  # noqa: F401

# isort: split
# After the built-ins: ``generic`` attaches their generic variants.
from prune_nas.methods import generic  # noqa: F401
from prune_nas.methods._base import (
    REGISTRY,
    Method,
    Param,
    PruneResult,
    check_ratio,
    get_method,
    list_methods,
    register,
)

__all__ = ["REGISTRY", "Method", "Param", "PruneResult", "check_ratio", "get_method", "list_methods",
           "register"]
