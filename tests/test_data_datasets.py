"""Dataset readers: IDX parsing and its errors, CIFAR-10 binary records, balanced subsets, eval preprocessing."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo import datasets as ds

HAVE_FMNIST = (Path(ds.FMNIST_DEFAULT_DIR) / "t10k-labels-idx1-ubyte.gz").is_file()
needs_fmnist = pytest.mark.skipif(not HAVE_FMNIST, reason="Debian package dataset-fashion-mnist not installed")


def _idx(shape: tuple[int, ...], payload: bytes, magic: bytes | None = None) -> bytes:
    head = magic if magic is not None else bytes([0, 0, 0x08, len(shape)])
    return head + b"".join(struct.pack(">I", d) for d in shape) + payload


@needs_fmnist
def test_real_fashion_mnist_test_split() -> None:
    images, labels = ds.load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and torch.bincount(labels).tolist() == [1000] * 10
    mean = images.float().div(255).mean().item()
    assert abs(mean - ds.FMNIST_MEAN[0]) < 0.01  # the test split's mean is close to the train split's
    with gzip.open(Path(ds.FMNIST_DEFAULT_DIR) / "t10k-images-idx3-ubyte.gz") as f:
        header = f.read(16)
    assert header[:4] == bytes([0, 0, 8, 3]) and struct.unpack(">III", header[4:]) == (10000, 28, 28)


def test_idx_roundtrip_plain_and_gz(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = _idx((2, 3, 4), data.tobytes())
    (tmp_path / "a-idx3-ubyte").write_bytes(raw)
    (tmp_path / "b-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    assert np.array_equal(ds.read_idx(tmp_path / "a-idx3-ubyte", 3), data)
    assert np.array_equal(ds.read_idx(tmp_path / "b-idx3-ubyte.gz", 3), data)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_idx((5, 2, 2), bytes(12)), "payload has 12"),  # header says 5 images, 3 are there
        (_idx((1, 2, 2), bytes(4), magic=bytes([0, 0, 0x0D, 3])), "bad IDX magic"),  # float type code
        (_idx((4,), bytes(4)), "bad IDX magic"),  # a 1-D labels file where images were expected
        (b"\x00\x00", "too short"),
    ],
)
def test_corrupt_idx_gives_one_clear_error(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(ds.DatasetError, match=message) as err:
        ds.read_idx(path, 3)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(_idx((1000,), bytes(1000)))[:30])
    with pytest.raises(ds.DatasetError, match="cannot read IDX file"):
        ds.read_idx(path, 1)


def test_missing_fashion_mnist_names_path_and_package(tmp_path: Path) -> None:
    with pytest.raises(ds.DatasetError, match="dataset-fashion-mnist") as err:
        ds.load_fashion_mnist("train", tmp_path)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in str(err.value)
    with pytest.raises(ds.DatasetError, match="unknown split"):
        ds.load_fashion_mnist("val", tmp_path)


def test_fashion_mnist_images_labels_mismatch(tmp_path: Path) -> None:
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx((3, 28, 28), bytes(3 * 784)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx((2,), bytes([1, 2])))
    with pytest.raises(ds.DatasetError, match="3 images but 2 labels"):
        ds.load_fashion_mnist("test", tmp_path)


def test_cifar10_binary_records(tmp_path: Path) -> None:
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    rng = np.random.default_rng(0)
    records = rng.integers(0, 256, (3, 3073), dtype=np.uint8)
    records[:, 0] = [3, 7, 9]
    (root / "test_batch.bin").write_bytes(records.tobytes())
    images, labels = ds.load_cifar10("test", tmp_path)
    assert images.shape == (3, 3, 32, 32) and labels.tolist() == [3, 7, 9]
    assert np.array_equal(images[1].numpy().reshape(-1), records[1, 1:])
    (root / "test_batch.bin").write_bytes(records.tobytes()[:-5])
    with pytest.raises(ds.DatasetError, match="whole number of 3073-byte records"):
        ds.load_cifar10("test", root)
    with pytest.raises(ds.DatasetError, match=r"data_batch_1\.bin not found"):
        ds.load_cifar10("train", root)


def test_balanced_subset_is_deterministic_and_balanced() -> None:
    labels = torch.arange(1000) % 10
    labels = labels[torch.randperm(1000, generator=torch.Generator().manual_seed(1))]
    a, b = ds.balanced_subset(labels, 105, seed=3), ds.balanced_subset(labels, 105, seed=3)
    assert torch.equal(a, b) and len(a.unique()) == 105
    assert not torch.equal(a, ds.balanced_subset(labels, 105, seed=4))
    counts = torch.bincount(labels[a], minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 105
    train, val = ds.split_train_val(labels, 200, seed=0)
    assert torch.bincount(labels[val]).tolist() == [20] * 10
    assert len(train) + len(val) == 1000 and not set(train.tolist()) & set(val.tolist())
    # a class that runs short is made up by the others
    skewed = torch.tensor([0] * 3 + [1] * 50)
    assert torch.bincount(skewed[ds.balanced_subset(skewed, 20)]).tolist() == [3, 17]
    with pytest.raises(ds.DatasetError, match="subset size"):
        ds.balanced_subset(labels, 0)


def test_eval_dataset_follows_model_metadata() -> None:
    d = ds.build_eval_dataset("synthetic", "test", None, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), limit=20)
    assert len(d) == 20
    x, y = d[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    batch = d.dataset.__getitems__([0, 1])
    assert torch.equal(batch[0][0], d.dataset[0][0]) and batch[1][1] == d.dataset[1][1]
    gray = ds.build_eval_dataset("synthetic", "test", None, 28, ds.SYNTHETIC_MEAN, ds.SYNTHETIC_STD)
    x, _ = gray[0]
    images, _ = ds.make_synthetic("test")
    assert torch.allclose(x, (images[0].float() / 255 - 0.5) / 0.25)
