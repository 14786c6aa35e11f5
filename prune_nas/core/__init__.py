"""Core layer: what a pruned architecture *is*, with no training in sight.

Genome (frozen, versioned, structurally validated, canonical key), the built-in model families (``arch``), the
channel-coupling graph, layer geometry and cost (params and MACs without building a model), sparsity masks,
the builder, the bundled genome library, the JSON Schemas, and small utilities (errors, atomic writes, hostile
file reading, output folders).

May import: the standard library and third-party packages only; nothing else of prune_nas.
"""
