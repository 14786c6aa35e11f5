"""Pruning methods: each module registers one or more :class:`Method` subclasses (see ``_base.py``).

Importing this package fills the registry; ``get_method(name)`` / ``list_methods()`` read it.
"""

from __future__ import annotations

from ._base import REGISTRY, Method, Param, PruneResult, check_ratio, get_method, list_methods, register

__all__ = ["REGISTRY", "Method", "Param", "PruneResult", "check_ratio", "get_method", "list_methods", "register"]
