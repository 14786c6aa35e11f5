"""Pruning methods: one module per method, each registering a :class:`Method` subclass (see ``_base.py``).

Importing this package fills the registry; ``get_method(name)`` / ``list_methods()`` read it. Shared pieces:
``surgery`` (kept channels -> smaller genome + inherited weights), ``discover`` (train, prune, write).

>>> from prune_nas.methods import get_method
>>> get_method("slimming").target
'automatic'
"""

from __future__ import annotations

from . import baselines, l1norm, magnitude, regression, slimming, sss, thinet  # noqa: F401
from ._base import REGISTRY, Method, Param, PruneResult, check_ratio, get_method, list_methods, register

__all__ = ["REGISTRY", "Method", "Param", "PruneResult", "check_ratio", "get_method", "list_methods", "register"]
