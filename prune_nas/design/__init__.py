"""Design layer: architectures made from pruning. ``discover`` runs a method (train large, prune, record the
genome and inherited weights); ``mining`` averages widths and kernel keep-maps over pruned runs; ``transfer``
turns a mined pattern into guided and transferred designs.

May import: ``prune_nas.methods``, ``prune_nas.training``, ``prune_nas.core``.
"""
