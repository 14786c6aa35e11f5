"""The dry run's bill: images per spec counted by hand for Table 1 at paper scale, device-hours from a
throughput table, models the table lacks said to be not measured."""

from __future__ import annotations

import json

import pytest

from prune_nas.cli import main
from prune_nas.core.errors import UserError
from prune_nas.repro.bill import bill, bill_lines, lines_of, load_throughput
from prune_nas.repro.experiments import load_spec

CIFAR, IMAGENET = 50_000, 1_281_167


def test_table1_images_by_hand():
    plan = load_spec("table1_l1norm").plan("paper")
    lines = lines_of(plan)
    # L1-norm trains its large model plainly: it is the unpruned model, and rows A and B of one model share
    # it. Per seed: large 160 + fine-tune 40 + Scratch-E 160 + Scratch-B 160 epochs (first row of a model),
    # then 40 + 160 + 160 for the second; 5 seeds. ImageNet rows are single runs, as in the paper: 90 epochs,
    # fine-tune 20.
    first, second = 5 * 520 * CIFAR, 5 * 360 * CIFAR
    assert [x.images for x in lines] == [first, first, second, first, second, 1 * 290 * IMAGENET,
                                         1 * 200 * IMAGENET]
    assert [x.key for x in lines] == ["vgg16-l1", "resnet56", "resnet56", "resnet110", "resnet110",
                                      "resnet34@224", "resnet34@224"]


def test_device_hours_from_the_table_and_not_measured_rows():
    plan = load_spec("table1_l1norm").plan("paper")
    table = {"device": "gpu-x", "results": {"vgg16-l1": {"engine_img_s": 1000, "plain_img_s": 250},
                                            "resnet56": {"engine_img_s": 2000}}}
    out = bill([plan], [table], "fast")
    hours = (5 * 520 * CIFAR) / 1000 / 3600 + (5 * 880 * CIFAR) / 2000 / 3600
    assert out["devices"]["gpu-x"]["hours"] == pytest.approx(hours)
    assert out["devices"]["gpu-x"]["rows_not_measured"] == 4
    assert out["specs"][0]["devices"]["gpu-x"]["not_measured"] == ["resnet110", "resnet34@224"]
    eager = bill([plan], [table], "eager")  # the plain loop's column; resnet56 has none: not measured
    assert eager["devices"]["gpu-x"]["hours"] == pytest.approx((5 * 520 * CIFAR) / 250 / 3600)
    text = "\n".join(bill_lines(out))
    assert f"{hours:.1f} device-hours for the measured rows; not measured: resnet110, resnet34@224" in text


def test_smoke_scale_narrow_models_are_not_measured():
    plan = load_spec("table4_slimming").plan("smoke")
    table = {"device": "gpu-x", "results": {"vgg11": {"engine_img_s": 1000}}}
    text = "\n".join(bill_lines(bill([plan], [table])))
    assert "gpu-x: not measured (vgg11@16 x0.125)" in text


def test_dry_run_prints_the_bill(tmp_path, capsys):
    table = tmp_path / "t.json"
    table.write_text(json.dumps({"device": "gpu-x", "results": {"resnet56": {"plain_img_s": 3600}}}))
    assert main(["run", "table1_l1norm", "--scale", "paper", "--dry-run", "--throughput", str(table)]) == 0
    out = capsys.readouterr().out
    assert "table1_l1norm [paper]: 1.20 G images" in out
    assert f"gpu-x: {5 * 880 * CIFAR / 3600 / 3600:.1f} device-hours for the measured rows" in out
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(UserError, match="not a throughput table"):
        load_throughput(bad)
