"""Pruning methods: one module per method, each registering a :class:`Method` subclass (see ``_base.py``).

Importing this package fills the registry; ``get_method(name)`` / ``list_methods()`` read it. Shared pieces:
``surgery`` (kept channels -> smaller genome + inherited weights), ``discover`` (train, prune, write).

>>> from prune_nas.methods import get_method
>>> get_method("slimming").target
'automatic'
"""

from __future__ import annotations

# The paper's methods in its order, then the baselines: the order `prune-nas methods` lists them in.
from . import l1norm, thinet, regression, slimming, sss, magnitude, baselines  # noqa: F401,I001
from ._base import REGISTRY, Method, Param, PruneResult, check_ratio, get_method, list_methods, register

__all__ = ["REGISTRY", "Method", "Param", "PruneResult", "check_ratio", "get_method", "list_methods", "register"]
