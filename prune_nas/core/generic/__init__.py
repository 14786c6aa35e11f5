"""Generic models: any ``nn.Module`` as a genome's base model (torchvision, timm, or the user's own factory).

A genome's ``model`` is then a reference, ``torchvision:resnet18``, ``timm:resnet18`` or
``python:<module>:<callable>``, with the factory's keyword arguments in ``model_args``. Width groups come from
the model's own graph (Torch-Pruning's DependencyGraph, ``analysis.py``), cost from that analysis without
building anything (``cost.py``), and the narrowed model from the reference model built fresh (``build.py``).

Nothing here imports ``prune_nas.core.genome`` at run time: the genome calls into this package, never back.
"""
