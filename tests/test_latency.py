"""Measured latency (core.latency): the cache key, the measurement's structure, the cache, the noise rule and
`genome info --latency`. No timing is asserted (figures live in benchmarks/latency_named.py)."""

from __future__ import annotations

import json

import pytest
import torch

from prune_nas.cli import main
from prune_nas.core.genome import base_genome, save_genome
from prune_nas.core.latency import Latency, cache_key, compare, device_name, measure, read_cache


def tiny():
    return base_genome("vgg11", width_mult=0.125, input_size=16)


def fake(median: float, iqr: float, **over) -> Latency:
    d = {"genome_key": "k", "device": "cpu", "device_name": "cpu x", "torch": "2", "batch": 1,
         "dtype": "float32", "threads": 1, "median_ms": median, "p25_ms": median - iqr / 2,
         "p75_ms": median + iqr / 2, "repeats": 10, "calls_per_block": 1}
    d.update(over)
    return Latency(**d)


def test_cache_key_depends_on_every_part():
    parts = ("abc", "AMD EPYC", "2.14.1", 1, "float32", 1)
    key = cache_key(*parts)
    assert key == cache_key(*parts) and len(key) == 64
    changed = [("abd", "AMD EPYC", "2.14.1", 1, "float32", 1),
               ("abc", "NVIDIA H200", "2.14.1", 1, "float32", 1),
               ("abc", "AMD EPYC", "2.15.0", 1, "float32", 1),
               ("abc", "AMD EPYC", "2.14.1", 64, "float32", 1),
               ("abc", "AMD EPYC", "2.14.1", 1, "bfloat16", 1),
               ("abc", "AMD EPYC", "2.14.1", 1, "float32", 2)]
    assert len({cache_key(*c) for c in changed} | {key}) == 7


def test_measurement_structure_and_cache(tmp_path):
    cache = tmp_path / "cache.json"
    g = tiny()
    a = measure(g, batch=2, threads=1, repeats=3, cache_path=cache)
    assert not a.cached and a.genome_key == g.key and a.batch == 2 and a.threads == 1 and a.repeats == 3
    assert 0 < a.p25_ms <= a.median_ms <= a.p75_ms and a.calls_per_block >= 1
    assert a.throughput == pytest.approx(2 * 1000 / a.median_ms)
    assert a.device_name == device_name("cpu") and a.torch == torch.__version__
    d = a.to_dict()
    assert {"median_ms", "iqr_ms", "spread", "throughput", "device_name"} <= set(d)
    assert "IQR" in a.text() and "img/s" in a.text()
    # The second call is the cached figure: same numbers, no new measurement.
    b = measure(g, batch=2, threads=1, repeats=3, cache_path=cache)
    assert b.cached and b.median_ms == a.median_ms and b.key == a.key
    assert list(read_cache(cache)) == [a.key]
    # Another batch size is another key.
    c = measure(g, batch=1, threads=1, repeats=3, cache_path=cache)
    assert not c.cached and len(read_cache(cache)) == 2


def test_unreadable_cache_is_empty_and_rewritten(tmp_path):
    cache = tmp_path / "cache.json"
    cache.write_text("{not json")
    assert read_cache(cache) == {}
    measure(tiny(), threads=1, repeats=3, cache_path=cache)
    assert len(read_cache(cache)) == 1


@pytest.mark.parametrize("kw, msg", [({"dtype": "int8"}, "dtype"), ({"batch": 0}, "batch"),
                                     ({"repeats": 2}, "repeats"), ({"threads": 0}, "threads")])
def test_bad_settings_are_user_errors(kw, msg, tmp_path):
    from prune_nas.core.errors import UserError

    with pytest.raises(UserError, match=msg):
        measure(tiny(), cache_path=tmp_path / "c.json", **kw)


def test_differences_within_the_noise_are_not_ranked():
    ref = fake(10.0, 0.4)
    assert compare(fake(8.0, 0.4), ref).resolved
    assert compare(fake(8.0, 0.4), ref).removed == pytest.approx(0.2)
    close = compare(fake(9.8, 0.5), ref)
    assert not close.resolved and "not resolved" in close.text()
    with pytest.raises(ValueError, match="batch"):
        compare(fake(8.0, 0.1, batch=64), ref)


def test_genome_info_latency_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRUNE_NAS_HOME", str(tmp_path))
    save_genome(tiny(), tmp_path / "g.json")
    argv = ["genome", "info", str(tmp_path / "g.json"), "--latency", "--batch", "1,4", "--threads", "1",
            "--repeats", "3"]
    assert main(argv + ["--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    lat = info["latency"]
    assert lat["device_name"] == device_name("cpu") and [r["batch"] for r in lat["batches"]] == [1, 4]
    for row in lat["batches"]:
        assert row["latency"]["genome_key"] == info["key"] and row["latency"]["batch"] == row["batch"]
        assert row["reference"]["batch"] == row["batch"] and "resolved" in row["vs_reference"]
    assert (tmp_path / "latency" / "cache.json").exists()
    assert main(argv) == 0  # the text form, from the cache now
    out = capsys.readouterr().out
    assert "latency on" in out and "IQR" in out and "cached" in out and "vs vgg11" in out
    assert main(argv[:3] + ["--latency", "--batch", "1,x"]) == 2
    assert "--batch" in capsys.readouterr().err
