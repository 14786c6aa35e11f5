"""Reproduction layer: the paper's experiments as specs, the one resumable runner (spread over the devices of
a machine, priced before it runs), the ``evaluate`` table, reports (tables and figures) and statistics.

May import: ``prune_nas.search``, ``prune_nas.design``, ``prune_nas.methods``, ``prune_nas.training``,
``prune_nas.core``.
"""
