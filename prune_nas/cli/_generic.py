"""`prune-nas genome list --models SOURCE` and `prune-nas genome from-model` (generic models)."""

from __future__ import annotations

import json
from pathlib import Path

from prune_nas.core.errors import UserError


def add_from_model(gsub) -> None:
    q = gsub.add_parser("from-model",
                        help="a genome (plus inherited weights) from a model another tool pruned",
                        description="Read the widths of a pruned model from its tensor shapes, check that "
                                    "the genome's model loads it strictly, write the genome and its weights.")
    q.add_argument("pruned", help="the pruned model: a state dict .pt (or a whole pickled module with "
                                  "--trust-pickle)")
    q.add_argument("--base", required=True, help="the model it was pruned from: torchvision:resnet18, "
                                                 "timm:..., python:pkg.mod:factory, or a built-in (resnet56)")
    q.add_argument("--num-classes", type=int, help="classes of the model (default: the base model's)")
    q.add_argument("--input-size", type=int, help="input side in pixels (default: the base model's)")
    q.add_argument("--kwargs", help="generic base: the factory's keyword arguments as JSON")
    q.add_argument("--trust-pickle", action="store_true",
                   help="allow a whole pickled module: loading it runs code from the file")
    q.add_argument("--out", required=True, help="output genome .json (the weights go next to it as .pt)")
    q.set_defaults(func=cmd_from_model)


def cmd_from_model(args) -> int:
    from prune_nas.core.genome import base_genome, save_genome
    from prune_nas.core.importer import genome_from_state, load_pruned
    from prune_nas.training.runs import attach_weights

    kwargs = None
    if args.kwargs:
        try:
            kwargs = json.loads(args.kwargs)
        except json.JSONDecodeError as e:
            raise UserError(f"--kwargs is not JSON: {e.msg}") from None
        if not isinstance(kwargs, dict):
            raise UserError("--kwargs must be a JSON object, e.g. '{\"width_mult\": 0.5}'")
    base = base_genome(args.base, num_classes=args.num_classes, input_size=args.input_size,
                       model_args={"kwargs": kwargs} if kwargs else None)
    state = load_pruned(args.pruned, trust_pickle=args.trust_pickle)
    genome = genome_from_state(base, state, source=str(args.pruned))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    genome = attach_weights(genome.replace(name=out.stem), state, out.with_suffix(".pt"))
    save_genome(genome, out)
    print(f"wrote {out} ({len(genome.widths)} width groups, key {genome.key}) and {out.with_suffix('.pt')}")
    return 0


def list_models(source: str, as_json: bool) -> int:
    from prune_nas.core.generic.refs import available

    names = available(source)
    if as_json:
        print(json.dumps([f"{source}:{n}" for n in names], indent=2))
        return 0
    print(f"{len(names)} {source} models; use one as `--model {source}:<name>` (e.g. {source}:{names[0]}):")
    for n in names:
        print(f"  {source}:{n}")
    print("Your own model: python:<module>:<callable> (a factory taking num_classes, "
          "returning an nn.Module).")
    return 0
