"""The clickable examples: real test images of a dataset of the registry, shipped as PNGs named after their class.

File names are ``<class-slug>_<test-index>.png`` (e.g. ``ankle-boot_0000.png``) and ``dataset.txt`` beside them
names the dataset, so the true label of each example can be read back from its name. ``write_examples``
regenerates them from a dataset's test split (``proxyless demo --write-examples DIR``): the first ``per_class``
test images of every class.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from zoo.datasets import get_dataset
from zoo.files import atomic_output, atomic_write

EXAMPLES_DIR = Path(__file__).parent / "examples"
DATASET_FILE = "dataset.txt"


def slug(name: str) -> str:
    """``'T-shirt/top'`` -> ``'t-shirt-top'``: a class name as a file-name part."""
    return "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower())


def example_paths(directory: Path = EXAMPLES_DIR) -> list[Path]:
    return sorted(directory.glob("*.png"))


def examples_dataset(directory: Path) -> str:
    """The dataset the examples in ``directory`` come from (its ``dataset.txt``)."""
    return (directory / DATASET_FILE).read_text().strip()


def label_of(path: str | os.PathLike[str]) -> str:
    """The class an example file shows, from its name and its folder's dataset."""
    path = Path(path)
    classes = get_dataset(examples_dataset(path.parent)).classes or ()
    by_slug = {slug(c): c for c in classes}
    try:
        return by_slug[path.stem.rsplit("_", 1)[0]]
    except KeyError:
        raise ValueError(f"{path}: not an example name (<class-slug>_<index>.png)") from None


def write_examples(out_dir: str | os.PathLike[str], dataset: str, per_class: int = 2) -> list[Path]:
    """Save the first ``per_class`` test images of each class of ``dataset`` (an in-memory one of the registry)
    as PNGs in ``out_dir``; returns their paths."""
    spec = get_dataset(dataset)
    images, labels = spec.arrays("test")
    out, written = Path(out_dir), []
    out.mkdir(parents=True, exist_ok=True)
    for label, name in enumerate(spec.classes or ()):
        for index in (labels == label).nonzero().flatten()[:per_class].tolist():
            path = out / f"{slug(name)}_{index:04d}.png"
            pixels = images[index].permute(1, 2, 0).squeeze(2).numpy()
            with atomic_output(path) as tmp:
                Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB").save(tmp, optimize=True)
            written.append(path)
    atomic_write(out / DATASET_FILE, dataset + "\n")
    return written
