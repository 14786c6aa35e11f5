"""Training layer: protocol and budgets (Scratch-E / Scratch-B), data sets, the one training loop and its fast
engine, run records in the content-addressed store, several runs at once (one device or every device), one run
on several processes (torch.distributed) and ImageNet decoded on the GPU.

May import: ``prune_nas.core``.
"""
