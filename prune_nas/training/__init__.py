"""Training layer: protocol and budgets (Scratch-E / Scratch-B), data sets, the one training loop and its fast
engine, run records in the content-addressed store, and several runs at once.

May import: ``prune_nas.core``.
"""
