"""Hostile input gets one line and exit status 2: never a traceback, never a hang.

Every command is run on bad genomes, spaces, specs and flags: the concrete cases that once crashed or hung,
then hypothesis-generated mutations. In-process ``prune_nas.cli.main`` calls (an exception escaping ``main``
fails the test with its traceback); a subprocess with a time limit only for the cases that used to hang.
Path-traversal cases check that no user-named output lands outside its root.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prune_nas.cli import build_parser, main
from prune_nas.core.genome import base_genome

REPO = Path(__file__).resolve().parent.parent
HANG_LIMIT_S = 120  # a process that reads /dev/zero or expands a YAML bomb never ends; these end in seconds
GENOME = base_genome("vgg11", width_mult=0.125, input_size=16, num_classes=10).to_dict()
SPACE = {
    "name": "fuzz",
    "model": "vgg11",
    "width": 0.125,
    "input_size": 16,
    "dataset": "synthetic",
    "budget": {"kind": "epochs", "epochs": 1},
    "early_stopping": False,
    "objective": {"maximize": "accuracy"},
    "parameters": {"stage_multiplier": {"range": [0.25, 1.0], "step": 0.25}},
}
SPEC = yaml.safe_load((REPO / "experiments" / "table4_slimming.yaml").read_text())
# Commands that read a genome and stop before training anything when it is bad.
GENOME_COMMANDS = [
    ["genome", "validate"],
    ["genome", "info"],
    ["budget"],
    ["genome", "export", "{file}", "--out", "{out}"],
    ["train", "--epochs", "1", "--no-progress", "--device", "cpu"],
]


def run_cli(argv: list[str]) -> int:
    """``main(argv)``'s exit status; argparse's own refusals (SystemExit 2) count as a return."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def genome_argv(command: list[str], file: Path, tmp: Path) -> list[str]:
    if "{file}" in command:
        return [a.format(file=file, out=tmp / "exported.json") for a in command]
    return [*command, str(file)]


def write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def refused(capsys, argv: list[str]) -> str:
    """Run ``argv``; it must exit 2 with one line (UserError) or argparse's usage + error, no traceback."""
    code = run_cli(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, code, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and (len(lines) == 1 or lines[0].startswith("usage:")), err
    return lines[-1]


def mutate(path: list, value):
    g = copy.deepcopy(GENOME)
    node = g
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return g


SPARSE = mutate(["sparsity"], {"density": {"features.conv1": 0.5}})


# ---- concrete cases ----------------------------------------------------------------------------------------
BAD_GENOMES = {
    "not-utf8": b'\xff\xfe{"format": "prune-nas.genome"}',
    "deeply-nested": "[" * 100_000 + "]" * 100_000,
    "nested-200": json.dumps(mutate(["provenance", "x"], json.loads("[" * 200 + "]" * 200))),
    "nan-density": json.dumps(mutate(["sparsity"], {"density": {"features.conv1": float("nan")}})),
    "inf-density": json.dumps(SPARSE).replace("0.5", "Infinity"),
    "huge-float-density": json.dumps(SPARSE).replace("0.5", "1e400"),
    "width-10^400": json.dumps(GENOME).replace(
        f'"conv1": {GENOME["widths"]["conv1"]}', '"conv1": 1' + "0" * 400
    ),
    "width-10^5000": json.dumps(GENOME).replace(
        f'"conv1": {GENOME["widths"]["conv1"]}', '"conv1": 1' + "0" * 5000
    ),
    "width-2^40": json.dumps(mutate(["widths", "conv1"], 2**40)),
    "negative-seed": json.dumps(mutate(["sparsity"], {"density": {"features.conv1": 0.5}, "seed": -1})),
    "huge-seed": json.dumps(mutate(["sparsity"], {"density": {"features.conv1": 0.5}, "seed": 2**70})),
    "float-seed": json.dumps(mutate(["sparsity"], {"density": {"features.conv1": 0.5}, "seed": 1.5})),
    "input-size-huge": json.dumps(mutate(["input", "size"], 10**12)),
    "classes-huge": json.dumps(mutate(["num_classes"], 10**12)),
    "blocks-huge": json.dumps(mutate(["blocks"], [10**9])),
    "not-an-object": "[1, 2, 3]",
    "empty": "",
    "truncated": json.dumps(GENOME)[:50],
    "kernel-keep-nan": json.dumps(mutate(["sparsity"], {"kernel_keep": {"1": [[0.5] * 3] * 3}})).replace(
        "0.5", "NaN", 1
    ),
    "mask-escapes": json.dumps(
        mutate(["sparsity"], {"mask": {"file": "../../../../etc/passwd", "sha256": "0" * 64}})
    ),
    "mask-is-folder": json.dumps(mutate(["sparsity"], {"mask": {"file": ".", "sha256": "0" * 64}})),
}


@pytest.mark.parametrize("case", sorted(BAD_GENOMES))
@pytest.mark.parametrize("command", GENOME_COMMANDS, ids=lambda c: "-".join(c[:2]))
def test_bad_genome_files(tmp_path, capsys, case, command):
    data = BAD_GENOMES[case]
    path = tmp_path / "bad.json"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    refused(capsys, genome_argv(command, path, tmp_path))
    assert not (tmp_path / "exported.json").exists()


def test_nan_density_is_invalid_not_valid_then_crashing(tmp_path, capsys):
    path = write(tmp_path / "nan.json", BAD_GENOMES["nan-density"])
    assert "NaN" in refused(capsys, ["genome", "validate", str(path)])
    # nor can a NaN reach export through a genome built in memory
    from prune_nas.core.errors import GenomeError
    from prune_nas.core.genome import Genome

    with pytest.raises(GenomeError, match="density"):
        Genome.from_dict(mutate(["sparsity"], {"density": {"features.conv1": float("nan")}}))


def test_user_files_that_are_not_regular_files(tmp_path, capsys):
    for target in ("/dev/null", str(tmp_path)):
        assert "regular file" in refused(capsys, ["genome", "validate", target]) or "folder" in refused(
            capsys, ["genome", "info", target]
        )
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(17 << 20)  # sparse: past the 16 MiB limit for text files
    assert "limit" in refused(capsys, ["genome", "validate", str(big)])


BAD_FLAGS = [
    ["train", "vgg11", "--threads", "-1"],
    ["train", "vgg11", "--threads", "0"],
    ["train", "vgg11", "--device", "bogus"],
    ["train", "vgg11", "--device", "cuda:x"],
    ["train", "vgg11", "--crop-padding", "-3"],
    ["train", "vgg11", "--lr", "nan"],
    ["train", "vgg11", "--lr", "inf"],
    ["train", "vgg11", "--lr", "-0.1"],
    ["train", "vgg11", "--lr", "1e400"],
    ["train", "vgg11", "--epochs", "0"],
    ["train", "vgg11", "--seeds", "0"],
    ["train", "vgg11", "--seed", "-1"],
    ["train", "vgg11", "--batch-size", "0"],
    ["train", "vgg11", "--momentum", "nan"],
    ["train", "vgg11", "--weight-decay", "-1"],
    ["train", "vgg11", "--lr-gamma", "0"],
    ["train", "vgg11", "--epochs", "9" * 5000],
    ["train", "vgg11", "--cap", "nan"],
    ["train", "vgg11", "--cap", "-2"],
    ["train", "vgg11", "--lr-steps", "nan"],
    ["budget", "vgg11", "--epochs", "0"],
    ["budget", "vgg11", "--cap", "inf"],
    ["discover", "--method", "slimming", "--input-size", "0"],
    ["discover", "--method", "slimming", "--threads", "0"],
    ["discover", "--method", "slimming", "--ratio", "nan"],
    ["discover", "--method", "slimming", "--width", "0"],
    ["discover", "--method", "slimming", "--width", "inf"],
    ["discover", "--method", "slimming", "--s", "nan"],
    ["discover", "--method", "slimming", "--device", "gpu0"],
    ["discover", "--method", "slimming", "--epochs", "-5"],
    ["evaluate", "--seeds", "0"],
    ["evaluate", "--input-size", "0"],
    ["evaluate", "--ratio", "nan"],
    ["evaluate", "--finetune-epochs", "0"],
    ["evaluate", "--threads", "-1"],
    ["search", "--space", "x", "--trials", "0"],
    ["search", "--space", "x", "--heartbeat", "0"],
    ["search", "--space", "x", "--grace", "-1"],
    ["worker", "--study", "x", "--sampler-seed", "-1"],
    ["results", "x", "--top", "0"],
    ["run", "table4_slimming", "--threads", "0"],
    ["run", "table4_slimming", "--device", "tpu"],
    ["guide", "p.json", "--sizes", "nan"],
    ["guide", "p.json", "--seed", "-1"],
    ["guide", "p.json", "--width", "0"],
    ["transfer", "a-digits", "b-digits", "--runs", "0"],
    ["transfer", "a-digits", "b-digits", "--ratio", "inf"],
]


@pytest.mark.parametrize("argv", BAD_FLAGS, ids=lambda a: " ".join(a)[:60])
def test_bad_flags(capsys, argv):
    refused(capsys, argv)


def test_export_into_a_folder_is_refused(tmp_path, capsys):
    assert "folder" in refused(capsys, ["genome", "export", "vgg11", "--out", str(tmp_path)])
    assert "folder" in refused(capsys, ["genome", "export", "vgg11", "--out", str(tmp_path / "new") + "/"])


# ---- bad spaces and specs ----------------------------------------------------------------------------------
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)


def space_with(**over) -> str:
    return yaml.safe_dump({**SPACE, **over})


BAD_SPACES = {
    "not-utf8": b"name: \xff\xfe\n",
    "alias-bomb": ALIAS_BOMB,
    "one-alias": "name: &n fuzz\nmodel: *n\n",
    "deeply-nested": "a: " + "[" * 50_000 + "]" * 50_000 + "\n",
    "nan-width": space_with(width=float("nan")),
    "inf-width": space_with().replace("width: 0.125", "width: .inf"),
    "huge-int": space_with().replace("input_size: 16", "input_size: " + "9" * 5000),
    "seeds-1e9": space_with(seeds=1_000_000_000),
    "not-a-mapping": "- 1\n- 2\n",
    "bad-yaml": "name: [unclosed\n",
}


@pytest.mark.parametrize("case", sorted(set(BAD_SPACES) - {"alias-bomb", "seeds-1e9"}))
def test_bad_search_spaces(tmp_path, capsys, case):
    data = BAD_SPACES[case]
    path = tmp_path / "space.yaml"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    refused(capsys, ["search", "--space", str(path), "--trials", "1", "--no-progress", "--device", "cpu"])
    assert not list((Path(os.environ["PRUNE_NAS_HOME"]) / "studies").glob("*.db"))


def spec_with(**over) -> dict:
    return {**copy.deepcopy(SPEC), **over}


BAD_SPECS = {
    "not-utf8": b"name: \xff\n",
    "one-alias": "format: &f prune-nas.experiment\nversion: 1\nname: *f\n",
    "deeply-nested": "rows: " + "[" * 50_000 + "]" * 50_000 + "\n",
    "name-dotdot": yaml.safe_dump(spec_with(name="..")),
    "name-slash": yaml.safe_dump(spec_with(name="../../escape")),
    "name-absolute": yaml.safe_dump(spec_with(name="/tmp/escape")),
    "nan-ratio": yaml.safe_dump(spec_with()).replace("ratio: 0.7", "ratio: .nan"),
    "not-a-mapping": "just a string\n",
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_experiment_specs(tmp_path, capsys, case):
    data = BAD_SPECS[case]
    path = tmp_path / "spec.yaml"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    runs = tmp_path / "runs" / "root"
    refused(capsys, ["run", str(path), "--dry-run", "--runs-dir", str(runs)])
    assert not [p for p in tmp_path.rglob("*") if p.is_dir() and "escape" in p.name]


# ---- the cases that used to hang: a subprocess each, under a time limit ------------------------------------
def _hang_cases(tmp: Path) -> dict[str, list[str]]:
    zero = write(
        tmp / "zero-mask.json", mutate(["sparsity"], {"mask": {"file": "/dev/zero", "sha256": "a" * 64}})
    )
    bomb = tmp / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    spec_bomb = tmp / "spec-bomb.yaml"
    spec_bomb.write_text(ALIAS_BOMB.replace("a: &a", "format: prune-nas.experiment\na: &a"))
    seeds = tmp / "seeds.yaml"
    seeds.write_text(BAD_SPACES["seeds-1e9"])
    cases = {f"dev-zero-mask {' '.join(c[:2])}": genome_argv(c, zero, tmp) for c in GENOME_COMMANDS}
    cases["alias-bomb search"] = ["search", "--space", str(bomb), "--trials", "1", "--device", "cpu"]
    cases["alias-bomb run"] = ["run", str(spec_bomb), "--dry-run"]
    cases["seeds-1e9 search"] = ["search", "--space", str(seeds), "--trials", "1", "--device", "cpu"]
    return cases


def test_former_hangs_end_in_seconds(tmp_path):
    """Two at a time (two cores): each must exit 2 with one line well inside the limit."""
    from concurrent.futures import ThreadPoolExecutor

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))

    def attempt(item):
        name, argv = item
        try:
            p = subprocess.run(
                [sys.executable, "-m", "prune_nas", *argv],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp_path,
                timeout=HANG_LIMIT_S,
            )
        except subprocess.TimeoutExpired:
            return name, "hung", ""
        ok = p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
        return name, "ok" if ok else f"exit {p.returncode}", p.stderr[-500:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(attempt, _hang_cases(tmp_path).items()))
    assert all(how == "ok" for _, how, _ in results), [r for r in results if r[1] != "ok"]


# ---- path traversal: every user-named output stays under its root ------------------------------------------
def test_mine_refuses_provenance_that_escapes(tmp_path, capsys):
    files = []
    for seed in (0, 1):
        g = mutate(
            ["provenance"], {"method": "slimming", "dataset": "../../../escape", "seed": seed, "ratio": 0.5}
        )
        files.append(str(write(tmp_path / f"g{seed}.json", g)))
    assert "dataset" in refused(capsys, ["mine", *files, "--no-plots"])
    assert not list(tmp_path.parent.rglob("escape*"))


def test_guide_refuses_a_pattern_method_that_escapes(tmp_path, capsys):
    files = []
    for seed in (0, 1):
        g = mutate(["provenance"], {"method": "slimming", "dataset": "digits", "seed": seed, "ratio": 0.5})
        files.append(str(write(tmp_path / f"g{seed}.json", g)))
    pattern = tmp_path / "p.pattern.json"
    assert run_cli(["mine", *files, "--no-plots", "--out", str(pattern)]) == 0
    capsys.readouterr()
    data = json.loads(pattern.read_text())
    data["method"] = "../../../escape"
    write(pattern, data)
    assert "method" in refused(capsys, ["guide", str(pattern), "--sizes", "0.5"])
    assert not list(tmp_path.parent.rglob("*escape*"))


@pytest.mark.parametrize("study", ["../../escape", "/tmp/escape", "..", ".hidden", "a/b", "x" * 300])
def test_study_names_cannot_place_the_database(tmp_path, capsys, study):
    path = write(tmp_path / "space.yaml", space_with())
    assert "study name" in refused(
        capsys,
        [
            "search",
            "--space",
            str(path),
            "--study",
            study,
            "--trials",
            "1",
            "--device",
            "cpu",
            "--no-progress",
        ],
    )
    assert "study name" in refused(capsys, ["worker", "--study", study, "--device", "cpu"])
    assert not list(tmp_path.parent.rglob("escape*.db"))


def test_transfer_method_cannot_escape(tmp_path, capsys):
    assert "--method" in refused(
        capsys,
        [
            "transfer",
            "vgg11-digits",
            "vgg11-digits",
            "--method",
            "../../escape",
            "--no-discover",
            "--out-dir",
            str(tmp_path / "out"),
        ],
    )


# ---- hypothesis --------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
genome_paths = st.sampled_from(
    [
        ["model"],
        ["num_classes"],
        ["input", "size"],
        ["input", "channels"],
        ["widths", "conv1"],
        ["widths"],
        ["blocks"],
        ["sparsity"],
        ["sparsity", "density"],
        ["sparsity", "seed"],
        ["provenance"],
        ["format"],
        ["version"],
        ["name"],
        ["family"],
    ]
)
# Examples per hypothesis test; PRUNE_NAS_FUZZ_EXAMPLES=1000 for a long hunt (the default keeps it fast).
EXAMPLES = int(os.environ.get("PRUNE_NAS_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(path=genome_paths, value=json_values, command=st.sampled_from(GENOME_COMMANDS[:4]))
def test_mutated_genomes_never_crash(tmp_path, capsys, path, value, command):
    """Any value in any field: valid (0) or refused with one line (2), never an exception."""
    file = write(tmp_path / "g.json", mutate(path, value))
    code = run_cli(genome_argv(command, file, tmp_path))
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_as_genome(tmp_path, capsys, data):
    file = tmp_path / "g.json"
    file.write_bytes(data)
    assert run_cli(["genome", "validate", str(file)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


NUMERIC_FLAGS = [
    ("train", "vgg11", "--threads"),
    ("train", "vgg11", "--lr"),
    ("train", "vgg11", "--epochs"),
    ("train", "vgg11", "--crop-padding"),
    ("train", "vgg11", "--momentum"),
    ("train", "vgg11", "--seed"),
    ("discover", "--method", "slimming", "--input-size"),
    ("discover", "--method", "slimming", "--ratio"),
    ("discover", "--method", "slimming", "--width"),
    ("evaluate", "--seeds"),
    ("search", "--space", "x", "--heartbeat"),
    ("results", "x", "--top"),
    ("train", "vgg11", "--device"),
    ("run", "x", "--threads"),
]


@FUZZ
@given(
    flag=st.sampled_from(NUMERIC_FLAGS),
    value=st.text(max_size=20)
    | st.sampled_from(
        [
            "nan",
            "-nan",
            "inf",
            "-inf",
            "1e400",
            "-0",
            "0",
            "-1",
            "1e-400",
            "0x10",
            "1_000",
            " 3",
            "cuda:99999",
        ]
    ),
)
def test_flag_values_parse_or_are_refused(capsys, flag, value):
    """The parser alone: any value is taken (then sane) or refused with exit 2, never an exception."""
    try:
        args = build_parser().parse_args([*flag, value])
    except SystemExit as e:
        assert e.code == 2
        return
    name = flag[-1].lstrip("-").replace("-", "_")
    got = getattr(args, name)
    if isinstance(got, float):
        assert got == got and abs(got) != float("inf")
    if isinstance(got, int) and name in ("threads", "epochs", "input_size", "seeds", "heartbeat", "top"):
        assert got >= 1


space_paths = st.sampled_from(
    [
        "name",
        "model",
        "width",
        "input_size",
        "dataset",
        "budget",
        "objective",
        "parameters",
        "seeds",
        "uniform",
        "seed_genomes",
        "sampler",
        "protocol",
    ]
)


@settings(FUZZ, max_examples=max(EXAMPLES * 2 // 3, 1))
@given(field=space_paths, value=json_values)
def test_mutated_spaces_never_crash(tmp_path, capsys, field, value):
    from prune_nas.core.errors import UserError
    from prune_nas.search.spaces import load_space

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, field: value}))
    try:
        load_space(path)
    except UserError as e:  # the CLI prints it as one line (control characters escaped)
        assert str(e)


spec_fields = st.sampled_from(["name", "kind", "method", "rows", "scales", "format", "version", "title"])


@settings(FUZZ, max_examples=max(EXAMPLES // 3, 1))
@given(field=spec_fields, value=json_values)
def test_mutated_specs_never_crash(tmp_path, capsys, field, value):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_with(**{field: value})))
    code = run_cli(["run", str(path), "--dry-run", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err
