"""The clickable examples: real Fashion-MNIST test images, shipped as 28x28 PNGs named after their class.

File names are ``<class-slug>_<test-index>.png`` (e.g. ``ankle-boot_0000.png``), so the true label of each
example can be read back from its name. ``write_examples`` regenerates them from the test split
(``proxyless demo --write-examples DIR``): the first ``per_class`` test images of every class.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from zoo.datasets import FMNIST_CLASSES, load_fashion_mnist
from zoo.files import atomic_output

EXAMPLES_DIR = Path(__file__).parent / "examples"


def slug(name: str) -> str:
    """``'T-shirt/top'`` -> ``'t-shirt-top'``: a class name as a file-name part."""
    return "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower())


_BY_SLUG = {slug(c): c for c in FMNIST_CLASSES}


def example_paths(directory: Path = EXAMPLES_DIR) -> list[Path]:
    return sorted(directory.glob("*.png"))


def label_of(path: str | os.PathLike[str]) -> str:
    """The Fashion-MNIST class an example file shows, from its name."""
    stem = Path(path).stem.rsplit("_", 1)[0]
    try:
        return _BY_SLUG[stem]
    except KeyError:
        raise ValueError(f"{path}: not an example name (<class-slug>_<index>.png)") from None


def write_examples(out_dir: str | os.PathLike[str], per_class: int = 2) -> list[Path]:
    """Save the first ``per_class`` test images of each class as PNGs in ``out_dir``; returns their paths."""
    images, labels = load_fashion_mnist("test")
    out, written = Path(out_dir), []
    out.mkdir(parents=True, exist_ok=True)
    for label, name in enumerate(FMNIST_CLASSES):
        for index in (labels == label).nonzero().flatten()[:per_class].tolist():
            path = out / f"{slug(name)}_{index:04d}.png"
            with atomic_output(path) as tmp:
                Image.fromarray(images[index].numpy(), mode="L").save(tmp, optimize=True)
            written.append(path)
    return written
