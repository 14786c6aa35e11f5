"""One analysis of a generic model: its width groups (Torch-Pruning's DependencyGraph) and the shape of every
parameter as a function of the group widths, so that params and MACs need no model (``cost.py``).

Done once per (model reference, kwargs, classes, input shape, fixed layers) on the ``meta`` device (no weights
allocated), kept in memory and on disk under ``output_dir("cache", "generic")``.

Width groups. Every set of channels that must change together (a residual stream, a conv's outputs with the
BN after it and the convs reading it, a depthwise conv with its expansion, a concatenated slice) is one group.
A group is named by the module paths of the convs / linears that *write* its channels: the path itself when
there is one, their longest common dotted prefix when there are several (``layer2`` for a ResNet stage's
residual stream), else the first path plus the count of the others (``conv1+2``). Names depend only on module
paths, so they are stable across builds and devices.

Fixed (not in any group, never narrowed): the classifier (the last conv / linear the forward pass runs), the
layers the user names in ``model_args.fixed``, and groups Torch-Pruning cannot serve exactly, each with one
note naming the layer: a grouped (non-depthwise) conv, a layer whose channel count disagrees with its group
(zero-padding "option A" shortcuts look like pass-through to Torch-Pruning), a layer type it cannot narrow.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

from prune_nas.core.errors import GenomeError

ANALYSIS_VERSION = 2  # 2: stages numbered densely over the groups' resolutions


@dataclass(frozen=True)
class GroupInfo:
    name: str
    width: int  # channels in the base model
    kind: str  # "stream" (written by several layers whose outputs are added) or "conv"
    stage: int  # feature-map resolution, 1 = largest
    writers: tuple[str, ...]  # conv / linear module paths that write the group's channels (the stable key)
    norms: tuple[str, ...]  # BatchNorm module paths normalising the group's channels
    cuts: tuple[tuple[str, int, float], ...]  # (parameter name, dim, channels per group channel)


@dataclass(frozen=True)
class ParamInfo:
    name: str
    shape: tuple[int, ...]
    positions: int = 0  # output positions per image of a conv / linear weight (its MACs = numel * positions)
    layer: str = ""  # conv | linear | "" (anything else)


@dataclass(frozen=True)
class Analysis:
    model: str
    groups: tuple[GroupInfo, ...]
    params: tuple[ParamInfo, ...]
    fixed: tuple[str, ...]  # module paths kept at full width (classifier, user-named)
    notes: tuple[str, ...]
    base_flops: int  # MACs per image, FlopCounterMode / 2
    flops_exact: bool  # whether the analytic MACs equal FlopCounterMode's (else cost builds on meta)
    seconds: float = 0.0

    def group(self, name: str) -> GroupInfo:
        return self._by_name()[name]

    def _by_name(self) -> dict[str, GroupInfo]:
        cached = self.__dict__.get("_groups_by_name")
        if cached is None:
            cached = {g.name: g for g in self.groups}
            object.__setattr__(self, "_groups_by_name", cached)
        return cached

    def base_widths(self) -> dict[str, int]:
        return {g.name: g.width for g in self.groups}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Analysis:
        groups = tuple(GroupInfo(g["name"], g["width"], g["kind"], g["stage"], tuple(g["writers"]),
                                 tuple(g["norms"]), tuple(tuple(c) for c in g["cuts"])) for g in d["groups"])
        params = tuple(ParamInfo(p["name"], tuple(p["shape"]), p["positions"], p["layer"])
                       for p in d["params"])
        return cls(d["model"], groups, params, tuple(d["fixed"]), tuple(d["notes"]), d["base_flops"],
                   d["flops_exact"], d.get("seconds", 0.0))


_MEMORY: dict[str, Analysis] = {}


def cache_key(model: str, kwargs: Mapping[str, Any], num_classes: int, in_channels: int, input_size: int,
              fixed: tuple[str, ...]) -> str:
    """Hash of everything the analysis depends on, library versions included."""
    versions = {"torch": _version("torch"), "analysis": ANALYSIS_VERSION}
    for lib in ("torchvision", "timm", "torch_pruning"):
        versions[lib] = _version(lib)
    text = json.dumps({"model": model, "kwargs": dict(kwargs), "classes": num_classes,
                       "channels": in_channels,
                       "size": input_size, "fixed": list(fixed), "versions": versions}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@cache
def _version(lib: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(lib.replace("_", "-"))
    except PackageNotFoundError:
        return None


def analyse(model: str, kwargs: Mapping[str, Any], num_classes: int, in_channels: int, input_size: int,
            fixed: tuple[str, ...] = ()) -> Analysis:
    """The analysis, from memory, from the disk cache, or computed (and cached)."""
    key = cache_key(model, kwargs, num_classes, in_channels, input_size, tuple(fixed))
    if key in _MEMORY:
        return _MEMORY[key]
    # User code may change between runs: only references to installed libraries are cached on disk.
    disk = not model.startswith("python:")
    path = None
    if disk:
        from prune_nas.core.paths import output_dir

        path = output_dir("cache", "generic") / f"{key}.json"
        if path.exists():
            try:
                result = Analysis.from_dict(json.loads(path.read_text()))
                _MEMORY[key] = result
                return result
            except (ValueError, KeyError, TypeError):
                pass  # a damaged cache file is recomputed and rewritten
    result = _analyse(model, kwargs, num_classes, in_channels, input_size, tuple(fixed))
    _MEMORY[key] = result
    if path is not None:
        from prune_nas.core.atomic import atomic_write

        def write(tmp: str) -> None:
            with open(tmp, "w") as f:
                json.dump(result.to_dict(), f)

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, write)
        except OSError:
            pass  # the cache is an optimisation; a read-only home only costs the analysis next time
    return result


def meta_model(model: str, kwargs: Mapping[str, Any], num_classes: int):
    """The reference model on the meta device (no memory), falling back to the CPU for factories that
    cannot run there."""
    import torch

    from prune_nas.core.generic.refs import instantiate

    try:
        with torch.device("meta"):
            return instantiate(model, kwargs, num_classes), torch.device("meta")
    except GenomeError:
        return instantiate(model, kwargs, num_classes), torch.device("cpu")


def dependency_graph(net, example):
    """Torch-Pruning's DependencyGraph of ``net`` traced on ``example`` (one line on failure)."""
    import torch_pruning as tp

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unwrapped parameters (ConvNeXt's layer_scale) are handled right
            return tp.DependencyGraph().build_dependency(net, example_inputs=example, verbose=False)
    except Exception as e:  # noqa: BLE001 - any tracing failure of any model is the user's one line
        raise GenomeError("model",
                          f"Torch-Pruning cannot trace this model: {type(e).__name__}: {e}") from None


def _analyse(model: str, kwargs, num_classes: int, in_channels: int, input_size: int,
             fixed: tuple[str, ...]) -> Analysis:
    import time

    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    start = time.perf_counter()
    net, device = meta_model(model, kwargs, num_classes)
    net.eval()
    module_name = {m: n for n, m in net.named_modules()}
    order, positions = [], {}

    def hook(mod, inp, out):
        name = module_name[mod]
        order.append(name)
        if isinstance(mod, nn.Linear):
            positions[name] = out.numel() // out.shape[-1] // out.shape[0]
        else:
            positions[name] = math.prod(out.shape[2:])

    layer_types = (nn.modules.conv._ConvNd, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, layer_types)]
    example = torch.empty(1, in_channels, input_size, input_size, device=device)
    if device.type == "cpu":
        example.normal_()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = net(example)
    except Exception as e:  # noqa: BLE001
        raise GenomeError("input",
                          f"{model} does not run on a {in_channels}x{input_size}x{input_size} input: "
                                   f"{type(e).__name__}: {e}") from None
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != num_classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise GenomeError("num_classes", f"{model} gives output {shape}, expected (1, {num_classes})")
    if not order:
        raise GenomeError("model", f"{model} runs no conv or linear layer: nothing to prune")
    fixed_modules = {order[-1]}
    for name in fixed:
        hits = [n for n in module_name.values() if n == name or n.startswith(name + ".")]
        if not name or not hits:
            raise GenomeError("model_args.fixed", f"{model} has no module {name!r}")
        fixed_modules.update(h for h in hits if h in positions)
    named = dict(net.named_modules())
    dg = dependency_graph(net, example)
    groups, notes = _groups(net, dg, [named[n] for n in sorted(fixed_modules)], positions)
    params = tuple(ParamInfo(n, tuple(p.shape), positions.get(n.rsplit(".", 1)[0], 0) if n.endswith(".weight")
                             and n.rsplit(".", 1)[0] in positions else 0,
                             _layer_kind(named.get(n.rsplit(".", 1)[0])) if n.endswith(".weight") else "")
                   for n, p in net.named_parameters())
    analytic = sum(math.prod(p.shape) * p.positions for p in params if p.layer)
    base_flops = counter.get_total_flops() // 2
    return Analysis(model, groups, params, tuple(sorted(fixed_modules)), tuple(notes), int(base_flops),
                    analytic == base_flops, round(time.perf_counter() - start, 3))


def _layer_kind(module) -> str:
    from torch import nn

    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    return ""


def _is_depthwise(m) -> bool:
    return m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _groups(net, dg, fixed_modules: list, positions: dict[str, int]) \
        -> tuple[tuple[GroupInfo, ...], list[str]]:
    """Enumerate, check and name the width groups."""
    from torch import nn

    module_name = {m: n for n, m in net.named_modules()}
    param_name = {p: n for n, p in net.named_parameters()}
    order = {n: i for i, n in enumerate(module_name.values())}
    layer_types = (nn.modules.conv._ConvNd, nn.Linear)
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
    resolutions = sorted(set(positions.values()), reverse=True)
    raw, notes = [], []
    for group in dg.get_all_groups(ignored_layers=fixed_modules, root_module_types=list(layer_types)):
        root = group[0].dep.target.module
        width = int(dg.get_out_channels(root))
        writers, norms, cuts, problem, stream = [], [], {}, None, False
        for dep, idxs in group:
            target = dep.target.module
            out_role = dg.is_out_channel_pruning_fn(dep.handler)
            mult = len(idxs) / width
            if isinstance(target, nn.Parameter):
                name = param_name.get(target)
                dims = [d for d, s in enumerate(target.shape) if s == len(idxs)] if name else []
                if not dims:
                    problem = problem or f"parameter {name or '?'} has no dimension of {len(idxs)} channels"
                    continue
                cuts[(name, dims[0])] = max(mult, cuts.get((name, dims[0]), 0.0))
                continue
            name = module_name.get(target)
            if name is None:  # a traced operation (add, concat, reshape): no parameters of its own
                stream = stream or "Add" in repr(target)
                continue
            own = dict(target.named_parameters(recurse=False))
            if isinstance(target, layer_types):
                transposed = getattr(target, "transposed", False)
                if (isinstance(target, nn.modules.conv._ConvNd) and target.groups > 1
                        and not _is_depthwise(target)):
                    problem = problem or f"{name} is a grouped convolution (groups={target.groups})"
                    continue
                if out_role:
                    count = target.out_channels if hasattr(target, "out_channels") else target.out_features
                    if count != len(idxs):
                        problem = problem or (f"{name} has {count} output channels but its group has "
                                              f"{len(idxs)} (e.g. a zero-padding shortcut)")
                        continue
                    writers.append(name)
                    dims = {"weight": 1 if transposed else 0, "bias": 0}
                elif isinstance(target, nn.modules.conv._ConvNd) and _is_depthwise(target):
                    continue  # its input channels follow its output channels (listed as an output)
                else:
                    dims = {"weight": 0 if transposed else 1}
            elif isinstance(target, norm_types):
                if isinstance(target, nn.modules.batchnorm._BatchNorm):
                    norms.append(name)
                shape = getattr(target, "normalized_shape", None)
                if shape is not None and len(shape) != 1:
                    problem = problem or f"{name} normalises over {tuple(shape)}, not channels"
                    continue
                dims = {p: 0 for p in own}
            elif own:
                problem = problem or f"{name} ({type(target).__name__}) cannot be narrowed here"
                continue
            else:
                continue
            for p, d in dims.items():
                if p in own:
                    full = f"{name}.{p}"
                    cuts[(full, d)] = max(mult, cuts.get((full, d), 0.0))
        if problem or not writers:
            notes.append(f"{module_name.get(root, '?')}: channels fixed "
                         f"({problem or 'no layer writes them'})")
            continue
        writers.sort(key=order.__getitem__)
        stage_pos = min(positions.get(w, resolutions[-1]) for w in writers)
        stream = stream and len(writers) > 1
        raw.append((writers, width, "stream" if stream else "conv", resolutions.index(stage_pos) + 1,
                    tuple(sorted(set(norms), key=order.__getitem__)),
                    tuple((p, d, m) for (p, d), m in cuts.items())))
    raw.sort(key=lambda r: order[r[0][0]])  # layout order of the first writer: the stem first
    # Stages are numbered 1.. over the resolutions that hold a group (a ResNet stem's own resolution holds
    # none: its conv joins the first stage's stream), so equal-depth models number them alike for transfer.
    rank = {s: i + 1 for i, s in enumerate(sorted({r[3] for r in raw}))}
    raw = [(w, width, kind, rank[stage], *rest) for w, width, kind, stage, *rest in raw]
    names = _names([w for w, *_ in raw])
    groups = tuple(GroupInfo(n, width, kind, stage, tuple(w), norms, cuts)
                   for n, (w, width, kind, stage, norms, cuts) in zip(names, raw))
    return groups, notes


def _names(writer_lists: list[list[str]]) -> list[str]:
    """Readable unique names from the writers' module paths (see the module doc)."""
    def prefix(paths: list[str]) -> str:
        parts = [p.split(".") for p in paths]
        common = []
        for segs in zip(*parts):
            if len(set(segs)) > 1:
                break
            common.append(segs[0])
        return ".".join(common)

    first = []
    for paths in writer_lists:
        if len(paths) == 1:
            first.append(paths[0])
        else:
            first.append(prefix(paths) or f"{paths[0]}+{len(paths) - 1}")
    counts: dict[str, int] = {}
    for n in first:
        counts[n] = counts.get(n, 0) + 1
    return [n if counts[n] == 1 else f"{paths[0]}+{len(paths) - 1}" for n, paths in zip(first, writer_lists)]


def param_shapes(analysis: Analysis, widths: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Every parameter's shape once each group has its width in ``widths`` (missing groups: base width)."""
    cut: dict[tuple[str, int], int] = {}
    for g in analysis.groups:
        removed = g.width - int(widths.get(g.name, g.width))
        if removed:
            for p, d, mult in g.cuts:
                cut[(p, d)] = cut.get((p, d), 0) + round(removed * mult)
    shapes = {}
    for p in analysis.params:
        shape = list(p.shape)
        for d in range(len(shape)):
            shape[d] -= cut.get((p.name, d), 0)
        shapes[p.name] = tuple(shape)
    return shapes


def analysis_of(spec) -> Analysis:
    """The (cached) analysis of a generic model spec (``family.generic_spec``): its reference model at its
    classes and input shape."""
    return analyse(spec.name, spec.config["kwargs"], spec.num_classes, spec.in_channels, spec.input_size,
                   tuple(spec.config["fixed"]))


def writers_of(group, dg, module_name: dict, order: dict) -> tuple[str, ...]:
    """The module paths of the convs / linears writing a Torch-Pruning group's channels, in module order:
    the key that matches a group of a freshly traced model to the analysis."""
    from torch import nn

    names = {module_name[d.target.module] for d, _ in group
             if isinstance(d.target.module, (nn.modules.conv._ConvNd, nn.Linear))
             and dg.is_out_channel_pruning_fn(d.handler) and d.target.module in module_name}
    return tuple(sorted(names, key=order.__getitem__))
