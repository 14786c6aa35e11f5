"""Datasets: digits split and adaptation, batched augmentation, determinism, missing-dataset messages."""

from __future__ import annotations

import pytest
import torch

from prune_nas.core.errors import UserError
from prune_nas.training.data import DIGITS_TEST_SIZE, load_dataset, random_crop, synthetic


@pytest.fixture(scope="module")
def digits16():
    return load_dataset("digits", input_size=16, in_channels=3)


def test_digits_fixed_stratified_split(digits16):
    assert (digits16.train_size, digits16.test_size) == (1437, DIGITS_TEST_SIZE)
    assert digits16.train_x.dtype == torch.uint8 and digits16.train_x.shape[1:] == (3, 16, 16)
    per_class = torch.bincount(digits16.test_y, minlength=10)
    assert per_class.min() >= 35 and per_class.max() <= 37  # stratified: ~36 of each digit
    again = load_dataset("digits", input_size=16, in_channels=3)
    assert torch.equal(again.test_y, digits16.test_y) and torch.equal(again.train_x, digits16.train_x)
    assert not digits16.flip  # a mirrored digit is another digit


def test_digits_adapts_to_input():
    gray = load_dataset("digits", input_size=8, in_channels=1)
    assert gray.train_x.shape[1:] == (1, 8, 8) and len(gray.mean) == 1
    assert int(gray.train_x.max()) == 255  # 0..16 scaled to 0..255
    rgb = load_dataset("digits", input_size=32, in_channels=3)
    assert torch.equal(rgb.train_x[:, 0], rgb.train_x[:, 2])  # gray replicated


def test_random_crop_offsets():
    x = torch.randint(1, 256, (3, 2, 8, 8), dtype=torch.uint8)
    centre = random_crop(x, 4, torch.full((2, 3), 4))
    assert torch.equal(centre, x)
    shifted = random_crop(x, 4, torch.tensor([[0, 8, 4], [0, 8, 2]]))
    assert torch.equal(shifted[0, :, 4:, 4:], x[0, :, :4, :4]) and shifted[0, :, :4].sum() == 0
    assert torch.equal(shifted[1, :, :4, :4], x[1, :, 4:, 4:]) and shifted[1, :, 4:].sum() == 0
    assert torch.equal(shifted[2, :, :, 2:], x[2, :, :, :6]) and shifted[2, :, :, :2].sum() == 0


def test_train_batches_cover_epoch_and_are_deterministic():
    ds = synthetic(train_size=100, test_size=30, input_size=8)
    batches = list(ds.train_batches(32, torch.Generator().manual_seed(3)))
    again = list(ds.train_batches(32, torch.Generator().manual_seed(3)))
    other = list(ds.train_batches(32, torch.Generator().manual_seed(4)))
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]
    assert torch.equal(torch.cat([y for _, y in batches]).sort().values, ds.train_y.sort().values)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    assert not torch.equal(batches[0][0], other[0][0])
    assert batches[0][0].dtype == torch.float32 and batches[0][0].shape == (32, 3, 8, 8)
    assert sum(len(y) for _, y in ds.test_batches(16)) == 30


def test_batch_of_one_is_dropped():
    # BatchNorm cannot train on a batch of one sample, so a remainder of one is left out of the epoch.
    ds = synthetic(train_size=65, test_size=8, input_size=8)
    assert ds.steps_per_epoch(64) == 1
    assert [len(y) for _, y in ds.train_batches(64, torch.Generator())] == [64]


def test_flips_mirror_whole_images():
    ds = synthetic(train_size=64, test_size=8, input_size=8)
    t = ds.on("cpu")
    x, y = next(ds.train_batches(64, torch.Generator().manual_seed(0), crop_padding=0, flip=True))
    orig = (ds.train_x.float() / 255 - t["mean"]) / t["std"]
    # Recover which sample each row is by its label order: compare against both orientations of all samples.
    same = (x[:, None] - orig[None]).abs().flatten(2).amax(2) < 1e-5
    mirrored = (x[:, None] - orig.flip(3)[None]).abs().flatten(2).amax(2) < 1e-5
    assert bool((same | mirrored).any(1).all())
    assert 0 < int(mirrored.any(1).sum()) < 64


def test_digits_never_flip(digits16):
    x, y = next(digits16.train_batches(2000, torch.Generator().manual_seed(0), crop_padding=0, flip=True))
    order = torch.randperm(digits16.train_size, generator=torch.Generator().manual_seed(0))
    ref = digits16.normalize(digits16.train_x, digits16.on("cpu"))[order]
    assert torch.equal(x, ref) and torch.equal(y, digits16.train_y[order])


def test_missing_cifar_says_where_and_how(tmp_path):
    with pytest.raises(UserError) as e:
        load_dataset("cifar10", data_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and "--download" in msg and "--data-dir" in msg


def test_missing_imagenet_and_unknown_name(tmp_path):
    with pytest.raises(UserError, match="train"):
        load_dataset("imagenet", data_dir=tmp_path)
    with pytest.raises(UserError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")


def test_missing_dataset_cli_is_one_line(tmp_path, capsys):
    from prune_nas.cli import main

    code = main(["train", "resnet20", "--dataset", "cifar100", "--data-dir", str(tmp_path), "--store",
                 str(tmp_path / "store"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "cifar100 not found" in err and "--download" in err
