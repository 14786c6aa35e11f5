"""The GPU input pipeline's code (batched decode, random resized crop, flip, normalise), run on the CPU here:
shapes, labels, reproducibility from the caller's generator, the crop box's bounds."""

from __future__ import annotations

import torch

from prune_nas.training import jpeg
from prune_nas.training.data import IMAGENET_MEAN, IMAGENET_STD, FolderDataset

NORM = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def _folder(root, sizes):
    from torchvision.io import encode_jpeg

    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for i, (h, w) in enumerate(sizes):
            d = root / split / f"c{i % 2}"
            d.mkdir(parents=True, exist_ok=True)
            img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
            (d / f"{i}.jpg").write_bytes(bytes(encode_jpeg(img).numpy()))
    return FolderDataset("imagenet", root, input_size=32, workers=0)


def test_train_and_test_batches_on_a_cpu_device(tmp_path):
    ds = _folder(tmp_path, [(40, 60), (64, 48), (50, 50), (90, 30), (33, 70)])
    samples = ds.train_set.samples
    a = list(jpeg.train_batches(samples, 2, torch.Generator().manual_seed(1), "cpu", input_size=32, workers=0,
                                **NORM))
    b = list(jpeg.train_batches(samples, 2, torch.Generator().manual_seed(1), "cpu", input_size=32, workers=0,
                                **NORM))
    assert [x.shape for x, _ in a] == [(2, 3, 32, 32), (2, 3, 32, 32)]  # the last batch of one is dropped
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    labels = {s[1] for s in samples}
    assert {int(v) for _, y in a for v in y} <= labels
    x = torch.cat([x for x, _ in a])
    assert x.dtype == torch.float32 and -2.2 < float(x.min()) and float(x.max()) < 2.7  # ImageNet-normalised
    c = list(jpeg.train_batches(samples, 2, torch.Generator().manual_seed(2), "cpu", input_size=32, workers=0,
                                **NORM))
    assert not torch.equal(torch.cat([x for x, _ in c]), x)
    test = list(jpeg.test_batches(ds.test_set.samples, 4, "cpu", input_size=32, workers=0, **NORM))
    assert [t.shape for t, _ in test] == [(4, 3, 32, 32), (1, 3, 32, 32)]
    assert torch.equal(torch.cat([y for _, y in test]), torch.tensor([s[1] for s in ds.test_set.samples]))


def test_ranks_decode_only_their_slice_of_each_global_batch(tmp_path):
    from prune_nas.training.distributed import Slice

    ds = _folder(tmp_path, [(40, 60), (64, 48), (50, 50), (90, 30), (33, 70), (45, 45), (60, 40)])
    samples = ds.train_set.samples

    def batches(shard):
        return list(jpeg.train_batches(samples, 3, torch.Generator().manual_seed(5), "cpu", input_size=32,
                                       workers=0, shard=shard, **NORM))

    whole = batches(None)  # 3, 3, and a last batch of one image, dropped
    parts = [batches((r, 2)) for r in range(2)]
    assert all(isinstance(b, Slice) for p in parts for b in p)
    assert [[len(b.y) for b in p] for p in parts] == [[1, 1], [2, 2]] and parts[0][0].size == 3
    for i, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([parts[0][i].x, parts[1][i].x]), x)
        assert torch.equal(torch.cat([parts[0][i].y, parts[1][i].y]), y)


def test_crop_box_stays_inside_the_image_and_in_the_area_range():
    g = torch.Generator().manual_seed(0)

    def draw():
        return torch.rand(jpeg.DRAWS, generator=g, dtype=torch.float64).tolist()

    for h, w in [(375, 500), (500, 375), (20, 400), (256, 256)]:
        for _ in range(200):
            top, left, ch, cw = jpeg.crop_box(h, w, draw())
            assert 0 <= top and 0 <= left and top + ch <= h and left + cw <= w and ch > 0 and cw > 0
    areas = [jpeg.crop_box(375, 500, draw()) for _ in range(500)]
    frac = [ch * cw / (375 * 500) for _, _, ch, cw in areas]
    assert 0.07 < min(frac) and max(frac) <= 1.0 and 0.4 < sum(frac) / len(frac) < 0.65  # uniform in 0.08..1


def test_only_cuda_devices_decode_on_the_device():
    assert jpeg.gpu_decode("cuda:0") and not jpeg.gpu_decode("cpu")
