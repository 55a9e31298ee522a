"""TensorLoader: exact resume of the position, rank shards of one permutation, augmentation geometry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from search.training.data import NO_AUGMENT, Augment, TensorLoader, build_train_data
from zoo.datasets import DatasetError, make_synthetic

MEAN, STD = (0.5,), (0.25,)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return make_synthetic("train", n=200)


def _loader(data, **kw) -> TensorLoader:
    images, labels = data
    kw = {"train": True, "augment": Augment(pad=2, flip=True, erase=0.5), "seed": 7} | kw
    return TensorLoader(images, labels, 32, MEAN, STD, **kw)


def _take(loader: TensorLoader, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    while len(out) < n:  # iteration stops at each epoch end, like a DataLoader
        for batch in loader:
            out.append(batch)
            if len(out) == n:
                break
    return out


def test_resume_position_gives_the_same_batches(data) -> None:
    straight = _take(_loader(data), 14)  # 6 batches per epoch: crosses two epoch boundaries
    first = _loader(data)
    _take(first, 4)
    state = first.state_dict()
    assert state == {"epoch": 0, "batch": 4, "seed": 7, "batch_size": 32}
    resumed = _loader(data)
    resumed.load_state_dict(state)
    rest = _take(resumed, 10)
    for (xa, ya), (xb, yb) in zip(straight[4:], rest, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert resumed.state_dict()["epoch"] == 2
    assert not torch.equal(straight[0][1], straight[6][1])  # a new permutation each epoch
    with pytest.raises(DatasetError, match="seed 7"):
        _loader(data, seed=8).load_state_dict(state)


def test_ranks_take_shards_of_one_permutation(data) -> None:
    whole = _take(_loader(data, augment=NO_AUGMENT), 6)
    shards = [_take(_loader(data, augment=NO_AUGMENT, rank=r, world=2), 6) for r in (0, 1)]
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *shards, strict=True):
        assert len(y0) == len(y1) == 16
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)
    with pytest.raises(DatasetError, match="not divisible"):
        _loader(data, world=3)


def test_eval_order_and_last_partial_batch(data) -> None:
    images, labels = data
    loader = TensorLoader(images, labels, 64, MEAN, STD, train=False)
    ys = [y for _, y in loader]
    assert [len(y) for y in ys] == [64, 64, 64, 8] and torch.equal(torch.cat(ys), labels)
    shards = [torch.cat([y for _, y in TensorLoader(images, labels, 64, MEAN, STD, train=False, rank=r, world=3)])
              for r in range(3)]  # fmt: skip
    assert sorted(torch.cat(shards).tolist()) == sorted(labels.tolist())


def test_crop_flip_erase_match_a_per_image_reference(data) -> None:
    loader = _loader(data)
    idx = loader._epoch_indices()
    draws = {k: v[0] for k, v in loader._epoch_draws(tuple(idx.shape)).items()}
    x = loader.images[idx[0]]
    out = loader._augment(x, draws)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        dy, dx = int(draws["dy"][i]), int(draws["dx"][i])
        ref = padded[i, :, dy : dy + 28, dx : dx + 28]
        ref = ref.flip(2) if draws["flip"][i] else ref
        assert torch.equal(out[i], ref)
    erased = loader._erase(torch.ones(len(x), 1, 28, 28), draws)
    for i in range(len(x)):
        area = int(draws["eh"][i]) * int(draws["ew"][i])
        assert int((erased[i] == 0).sum()) == area
    assert 0 < int((draws["eh"] > 0).sum()) < len(x)  # p = 0.5: some images erased, some not


def test_build_train_data_holds_out_a_balanced_val_split() -> None:
    d = build_train_data("synthetic", None, 50, input_size=28, val_size=100, limit_train=500)
    assert d.val is not None and d.val.num_samples == 100 and d.train.num_samples == 500
    assert torch.bincount(d.val.labels).tolist() == [10] * 10
    assert d.test.num_samples == 500 and d.channels == 1 and len(d.classes) == 10


def test_imagefolder_loader_resumes_its_order(tmp_path) -> None:
    from PIL import Image

    from search.training.data import FolderLoader
    from zoo.datasets import build_eval_dataset

    for split in ("train", "val"):
        for c, name in enumerate(("cat", "dog")):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (12, 10), (40 * i, 100 * c, 7)).save(tmp_path / split / name / f"{i}.png")
    kw = {"train": True, "seed": 5, "workers": 0}
    loader = FolderLoader(tmp_path / "train", 4, 8, (0.5,) * 3, (0.25,) * 3, **kw)
    batches = [y for _, y in loader]
    assert len(batches) == 3 and loader.epoch == 1
    second = FolderLoader(tmp_path / "train", 4, 8, (0.5,) * 3, (0.25,) * 3, **kw)
    it = iter(second)
    x, y = next(it)
    assert x.shape == (4, 3, 8, 8) and torch.equal(y, batches[0])
    resumed = FolderLoader(tmp_path / "train", 4, 8, (0.5,) * 3, (0.25,) * 3, **kw)
    resumed.load_state_dict(second.state_dict())
    rest = [y for _, y in resumed]
    assert len(rest) == 2 and all(torch.equal(a, b) for a, b in zip(rest, batches[1:], strict=True))
    val = build_eval_dataset("imagenet", "test", tmp_path, 8, (0.5,), (0.25,), limit=4)
    assert len(val) == 4 and val[0][0].shape == (1, 8, 8)
