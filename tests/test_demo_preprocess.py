"""The demo's input handling: guards on bad files, and preprocessing that matches the dataset pipeline."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo.examples import EXAMPLES_DIR, example_paths, label_of, slug
from demo.preprocess import KEEP_PIXELS, MAX_FILE_BYTES, InputError, InputSpec, PixelBudget, load_image, prepare
from zoo.datasets import FMNIST_CLASSES, FMNIST_MEAN, FMNIST_STD, load_fashion_mnist

FMNIST = InputSpec(1, 28, 28, FMNIST_MEAN, FMNIST_STD, dark_background=True)
IMAGENET = InputSpec(3, 224, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), dark_background=False)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data): what a decompression bomb looks like."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def noise(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    bands = len(Image.new(mode, (1, 1)).getbands())
    a = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
    return Image.fromarray(a[..., 0] if bands == 1 else a, mode=mode)


def bad_inputs() -> dict[str, tuple[bytes, str]]:
    """Files the demo must refuse, with a word the message has to contain."""
    big = encode(noise("RGB", (256, 256)), "JPEG", quality=95)
    return {
        "not_an_image.png": (b"this is plain text, not a picture\n" * 4, "not an image"),
        "truncated.jpg": (big[: len(big) // 2], "truncated"),
        "one_pixel.png": (encode(Image.new("L", (1, 1)), "PNG"), "1x1"),
        "bomb.png": (png_header_only(20000, 20000), "megapixels"),
        "empty.png": (b"", "empty"),
    }


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", sorted(bad_inputs()))
def test_bad_files_are_refused_with_a_clear_message(tmp_path: Path, name: str) -> None:
    data, word = bad_inputs()[name]
    with pytest.raises(InputError, match=word):
        load_image(write(tmp_path, name, data))


def test_oversized_file_is_refused_before_decoding(tmp_path: Path) -> None:
    path = write(tmp_path, "huge.png", b"\0" * (MAX_FILE_BYTES + 1))
    with pytest.raises(InputError, match="MiB; the limit"):
        load_image(path)


@pytest.mark.parametrize(
    ("mode", "fmt", "note"),
    [("RGBA", "PNG", "transparency flattened"), ("CMYK", "JPEG", "CMYK converted"), ("I;16", "PNG", "stretched")],
)
def test_unusual_modes_are_converted_and_noted(tmp_path: Path, mode: str, fmt: str, note: str) -> None:
    source = noise(mode, (40, 30)) if mode != "I;16" else Image.fromarray(np.full((30, 40), 4000, np.uint16))
    image, notes = load_image(write(tmp_path, f"x.{fmt.lower()}", encode(source, fmt)))
    assert image.mode in ("L", "RGB") and image.size == (40, 30)
    assert any(note in n for n in notes), notes


def test_rgba_transparent_background_becomes_black(tmp_path: Path) -> None:
    a = np.zeros((32, 32, 4), np.uint8)
    a[8:24, 8:24] = (255, 255, 255, 255)  # an opaque white square on a fully transparent background
    image, _ = load_image(write(tmp_path, "cutout.png", encode(Image.fromarray(a, "RGBA"), "PNG")))
    g = np.asarray(image.convert("L"))
    assert g[0, 0] == 0 and g[16, 16] == 255


def test_animated_gif_uses_the_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("L", (32, 32), v) for v in (200, 10, 90)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    image, notes = load_image(write(tmp_path, "anim.gif", data))
    assert "first of 3 frames" in " ".join(notes)
    assert abs(int(np.asarray(image.convert("L")).mean()) - 200) <= 2


def test_fashion_mnist_image_is_the_dataset_pipeline_exactly(tmp_path: Path) -> None:
    images, _ = load_fashion_mnist("test")
    index = 17
    path = write(tmp_path, "t.png", encode(Image.fromarray(images[index].numpy(), "L"), "PNG"))
    image, notes = load_image(path)
    prepared = prepare(image, FMNIST, notes)
    expected = (images[index].numpy().astype(np.float32) / 255 - FMNIST_MEAN[0]) / FMNIST_STD[0]
    assert prepared.array.shape == (1, 1, 28, 28) and prepared.array.dtype == np.float32
    np.testing.assert_allclose(prepared.array[0, 0], expected, rtol=0, atol=1e-6)
    assert "used as is" in prepared.notes[-1]


def photo_of(image: np.ndarray, seed: int = 0) -> bytes:
    """A Fashion-MNIST image as a phone photo might show it: dark on an off-white, tinted, noisy background,
    enlarged 10x, off-centre on a 420x330 frame, saved as JPEG."""
    big = Image.fromarray(255 - image).resize((280, 280), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (420, 330), 255)
    canvas.paste(big, (100, 30))
    a = np.asarray(canvas, np.float32)
    rgb = np.stack([a * 0.95 + 8, a * 0.9 + 12, a * 0.8 + 30], -1)
    rgb += np.random.default_rng(seed).normal(0, 6, rgb.shape)
    return encode(Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB"), "JPEG", quality=85)


@pytest.mark.parametrize("index", [0, 2, 9, 18])  # ankle boot, trouser, sneaker, bag
def test_photo_of_a_test_image_comes_back_close_to_it(tmp_path: Path, index: int) -> None:
    images, _ = load_fashion_mnist("test")
    original = images[index].numpy()
    image, notes = load_image(write(tmp_path, "photo.jpg", photo_of(original, index)))
    prepared = prepare(image, FMNIST, notes)
    text = "; ".join(prepared.notes)
    assert "inverted" in text and "trimmed to the object" in text and "resized to 28x28" in text, text
    seen = np.asarray(prepared.seen, np.float32)
    assert prepared.seen.size == (28, 28) and prepared.seen.mode == "L"
    assert np.corrcoef(seen.ravel(), original.astype(np.float32).ravel())[0, 1] > 0.8
    assert max(seen[0].max(), seen[-1].max(), seen[:, 0].max(), seen[:, -1].max()) > 60  # fills the frame


def test_dark_object_off_centre_is_trimmed_padded_and_centred() -> None:
    a = np.full((200, 300, 3), 245, np.uint8)
    a[40:140, 20:80] = (120, 20, 20)  # a 60x100 dark red rectangle near the top left of a white photo
    prepared = prepare(Image.fromarray(a, "RGB"), FMNIST)
    seen = np.asarray(prepared.seen)
    assert "trimmed to the object (60x100); padded to 100x100" in "; ".join(prepared.notes)
    assert seen[:, :4].max() < 10 and seen[:, -4:].max() < 10  # black padding left and right
    assert seen[2:26, 10:18].min() > 200  # the object, bright now, centred and full height


def test_light_object_on_dark_is_not_inverted() -> None:
    a = np.full((64, 48), 15, np.uint8)
    a[16:48, 12:36] = 230
    prepared = prepare(Image.fromarray(a, "L"), FMNIST)
    assert not any("inverted" in n for n in prepared.notes)
    assert np.asarray(prepared.seen)[14, 14] > 200


def test_rgb_models_get_resize_and_center_crop() -> None:
    prepared = prepare(noise("RGB", (640, 480)), IMAGENET)
    assert prepared.array.shape == (1, 3, 224, 224)
    assert "center-cropped to 224x224" in prepared.notes[-1]
    assert "resized to 341x256" in prepared.notes[-1]


def test_examples_are_real_test_images_named_after_their_class() -> None:
    images, labels = load_fashion_mnist("test")
    paths = example_paths()
    assert 10 <= len(paths) <= 20 and {label_of(p) for p in paths} == set(FMNIST_CLASSES)
    for path in paths:
        index = int(path.stem.rsplit("_", 1)[1])
        assert FMNIST_CLASSES[int(labels[index])] == label_of(path), path.name
        np.testing.assert_array_equal(np.asarray(Image.open(path)), images[index].numpy())
    assert slug("T-shirt/top") == "t-shirt-top" and (EXAMPLES_DIR / "ankle-boot_0000.png").is_file()


BURST_SCRIPT = """
import ctypes, gc, io, json, os, threading, time
from PIL import Image, ImageDraw
from demo.preprocess import InputSpec, load_image, prepare

PAGE = os.sysconf("SC_PAGE_SIZE")
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20

im = Image.new("RGB", (7290, 5446), (235, 230, 225))  # 39.7 megapixels, under the 40 MP limit
ImageDraw.Draw(im).ellipse((2000, 1500, 5000, 4000), fill=(40, 50, 60))
buf = io.BytesIO()
im.save(buf, "PNG")
data = buf.getvalue()
del im, buf
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)  # the baseline without the test image's own garbage
base, peak, done = rss_mb(), [0.0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss_mb())
        time.sleep(0.005)
sampler = threading.Thread(target=sample)
sampler.start()
spec = InputSpec(1, 28, 28, (0.286,), (0.353,), dark_background=True)
workers = [threading.Thread(target=lambda: prepare(load_image(data)[0], spec)) for _ in range(4)]
for w in workers:
    w.start()
for w in workers:
    w.join()
done.set()
sampler.join()
gc.collect()
time.sleep(0.1)
print(json.dumps({"base_mb": base, "peak_mb": peak[0] - base, "after_mb": rss_mb() - base}))
"""


def test_a_burst_of_40_megapixel_images_is_bounded_and_memory_returns(tmp_path: Path) -> None:
    """Four 39.7 MP PNGs decoded and prepared at once, in a fresh process: RSS rises by well under 1 GB (unbounded:
    +0.74 GB per image, 3.4 GB for four) and comes back down to within 250 MB of where it started."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", BURST_SCRIPT], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["peak_mb"] < 1000, figures
    assert figures["after_mb"] < 250, figures


def test_the_pixel_budget_makes_decodes_wait_and_times_out_in_one_line() -> None:
    budget = PixelBudget(100)
    with budget.hold(60):
        with pytest.raises(InputError, match="busy decoding large images"), budget.hold(60, timeout=0.05):
            pass
        with budget.hold(40, timeout=0.05):  # what still fits runs at once
            assert budget.used == 100
    with budget.hold(10_000, timeout=0.05):  # one image over the whole budget runs, alone
        assert budget.used == 100
    assert budget.used == 0


def test_a_large_photo_is_decoded_reduced_and_classified_alike(tmp_path: Path) -> None:
    """A 12 MP JPEG is decoded at a reduced scale (DCT scaling) and reduced below KEEP_PIXELS; what the model
    sees is nearly the same as from the full-size decode."""
    small = np.asarray(Image.open(io.BytesIO(photo_of(load_fashion_mnist("test")[0][0].numpy()))))
    photo = Image.fromarray(small.repeat(10, axis=0).repeat(10, axis=1))  # 4200x3300: 13.9 MP
    path = write(tmp_path, "big.jpg", encode(photo, "JPEG", quality=90))
    image, notes = load_image(path)
    assert image.width * image.height <= KEEP_PIXELS and any("decoded at" in n for n in notes), notes
    reduced = prepare(image, FMNIST, notes).array
    full = prepare(Image.open(path).convert("RGB"), FMNIST).array
    assert np.abs(reduced - full).mean() < 0.1, np.abs(reduced - full).mean()
