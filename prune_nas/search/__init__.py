"""Search layer: declarative search spaces and Optuna studies that train candidates from scratch. The only
user of optuna.

May import: ``prune_nas.design``, ``prune_nas.methods``, ``prune_nas.training``, ``prune_nas.core``.
"""
