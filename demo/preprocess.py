"""Turn an uploaded file into the tensor a zoo model expects, refusing what is not a usable still image.

Two steps, so each can be tested alone:

``load_image(path)`` decodes defensively. The header is read first and the pixel count checked *before*
decoding (decompression-bomb guard: at most ``MAX_PIXELS``); files that are not images, truncated or
corrupt, or smaller than ``MIN_SIDE`` pixels raise ``InputError`` with one line saying what is wrong.
Decode memory is bounded for the whole server: a decode holds its pixel count from ``DECODE_BUDGET`` (so at most
two 40-megapixel images are decoded at once; others wait), a JPEG is decoded at a reduced scale and any image
over ``KEEP_PIXELS`` is reduced right after decoding (the nets take 28x28 or 224x224), and the heap is trimmed
after a large decode so the server's memory goes back down after a burst.
Animated images (GIF/APNG/WebP) use their **first frame** (the notes say so). Transparency is flattened
onto black (the background of dark-background datasets); CMYK/YCbCr/LAB/HSV are converted to RGB;
16-bit and float images are stretched to 8 bits; EXIF orientation is applied.

``prepare(image, spec)`` follows the model's metadata (channels, size, mean/std):

- An image already in the model's own format (e.g. a 28x28 grayscale test image of a 28x28 dataset) is only
  normalized: the dataset pipeline exactly.
- For datasets of light objects on a dark background (``DatasetSpec.dark_background`` in the dataset
  registry), a photo is converted to
  grayscale, **inverted when its border is bright** (a sneaker on a white table becomes a light sneaker on
  black), its background level (the border's median) is taken as black and the contrast stretched, it is
  trimmed to the object's bounding box, padded to a square with black and resized with an antialiasing
  (Lanczos) filter: as such datasets' own images were made (trimmed, longest side resized, centred).
- For other models: the dataset registry's eval transform (shorter side to size / 0.875, center crop).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import math
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from zoo.datasets import CROP_FRACTION, dataset_names, eval_geometry, get_dataset

MAX_PIXELS = 40_000_000  # refuse larger images before decoding them
MIN_SIDE = 8  # a 1x1 or 3x3 "image" carries nothing to classify
MAX_FILE_BYTES = 10 * 1024 * 1024  # the server's upload limit (gradio max_file_size) is the same
KEEP_PIXELS = 2_000_000  # larger images are reduced right after decoding: ample for a 224x224 crop
BUDGET_WAIT_S = 30.0  # how long a decode waits for the pixel budget before the request is refused
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


class InputError(ValueError):
    """An uploaded file that cannot be classified; the message is shown to the user as is."""


class ChoiceError(ValueError):
    """A model or runtime the server does not offer; the message names it and lists those it does."""


class PixelBudget:
    """Pixels being decoded at once, across every request of the server: a decode waits until its image fits."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.used = capacity, 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, pixels: int, timeout: float = BUDGET_WAIT_S) -> Iterator[None]:
        need = min(pixels, self.capacity)  # one image over the budget still runs, alone
        with self._cond:
            if not self._cond.wait_for(lambda: self.used + need <= self.capacity, timeout):
                raise InputError("the server is busy decoding large images; retry in a few seconds")
            self.used += need
        try:
            yield
        finally:
            with self._cond:
                self.used -= need
                self._cond.notify_all()


DECODE_BUDGET = PixelBudget(2 * MAX_PIXELS)


def _malloc_trim() -> None:
    """Give freed heap memory back to the system (glibc keeps it otherwise); a no-op where there is no glibc."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _load_libc()


@dataclass(frozen=True)
class InputSpec:
    """What a model wants as input: taken from its ModelInfo (input_size (C, H, W), mean, std, dataset)."""

    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dark_background: bool

    @classmethod
    def from_info(cls, info: object) -> InputSpec:
        """``dark_background`` from the dataset registry (False for a dataset it does not know)."""
        c, h, w = (int(v) for v in info.input_size)
        mean, std = _per_channel(info.mean, c, "mean"), _per_channel(info.std, c, "std")
        dark = str(info.dataset) in dataset_names() and get_dataset(str(info.dataset)).dark_background
        return cls(c, h, w, mean, std, dark)


def _per_channel(values: float | Sequence[float], channels: int, what: str) -> tuple[float, ...]:
    vals = (float(values),) if isinstance(values, int | float) else tuple(float(v) for v in values)
    if len(vals) == 1:
        vals *= channels
    if len(vals) != channels:
        raise ValueError(f"model metadata: {what} has {len(vals)} values for {channels} channels")
    return vals


@dataclass
class Prepared:
    """The model input (float32 NCHW, batch 1), the image the model sees, and what was done to get there."""

    array: np.ndarray
    seen: Image.Image
    notes: list[str] = field(default_factory=list)


def too_large(size: int) -> str:
    return f"the file is {size / 2**20:.1f} MiB; the limit is {MAX_FILE_BYTES / 2**20:.0f} MiB"


def load_image(
    source: str | os.PathLike[str] | bytes, budget: PixelBudget = DECODE_BUDGET
) -> tuple[Image.Image, list[str]]:
    """Decode an uploaded file (a path, or its bytes) to an 8-bit L or RGB image; ``InputError`` if unusable."""
    size = len(source) if isinstance(source, bytes) else os.path.getsize(source)
    if size == 0:
        raise InputError("the file is empty")
    if size > MAX_FILE_BYTES:
        raise InputError(too_large(size))
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            w, h = im.size
            _check_size(w, h)
            notes = [f"{im.format or 'image'} {w}x{h} {im.mode}"]
            with budget.hold(w * h):
                image = _decode(im, notes)
            if w * h > KEEP_PIXELS:
                _malloc_trim()
    except InputError:
        raise
    except Image.DecompressionBombError:  # Pillow's own limit (twice MAX_IMAGE_PIXELS), above ours
        over = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise InputError(
            f"image is over {over:.0f} megapixels; the limit is {MAX_PIXELS / 1e6:.0f} megapixels"
        ) from None
    except UnidentifiedImageError:
        raise InputError("not an image (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"the image file is truncated or corrupt ({e})") from None
    return image, notes


def _decode(im: Image.Image, notes: list[str]) -> Image.Image:
    """The first frame, EXIF-oriented, 8-bit, at most about ``KEEP_PIXELS`` (JPEGs decoded at a reduced scale)."""
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        notes.append(f"animated: used the first of {frames} frames")
        im.seek(0)
    w, h = im.size
    if w * h > KEEP_PIXELS and im.format == "JPEG":
        f = math.sqrt(w * h / KEEP_PIXELS)
        im.draft(im.mode, (math.ceil(w / f), math.ceil(h / f)))  # DCT scaling: 1/2 .. 1/8, never below the size
    im.load()
    ImageOps.exif_transpose(im, in_place=True)  # no full-size copy
    image = _reduce(_to_8bit(_reduce(im), notes))  # modes Pillow cannot reduce (1, P, I;16) are reduced once 8-bit
    if image is im:  # the opened file's image is freed when the file is closed
        image = im.copy()
    if image.width * image.height < w * h:
        notes.append(f"decoded at {image.width}x{image.height} (the nets take far fewer pixels)")
    return image


def _reduce(im: Image.Image) -> Image.Image:
    """``im`` reduced by an integer factor (box filter) to at most about ``KEEP_PIXELS``, where its mode allows."""
    factor = math.ceil(math.sqrt(im.width * im.height / KEEP_PIXELS))
    if factor < 2 or im.mode in ("1", "P", "I;16", "I;16B", "I;16L", "I;16N"):
        return im
    return im.reduce(factor)


def _check_size(w: int, h: int) -> None:
    if w * h > MAX_PIXELS:
        raise InputError(
            f"image is {w}x{h} ({w * h / 1e6:.0f} megapixels); the limit is {MAX_PIXELS / 1e6:.0f} megapixels"
        )
    if min(w, h) < MIN_SIDE:
        raise InputError(f"image is {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")


def _to_8bit(im: Image.Image, notes: list[str]) -> Image.Image:
    """L or RGB, 8 bits per channel; alpha flattened onto black (the dark-background datasets' background)."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        notes.append("transparency flattened onto black")
        return Image.alpha_composite(black, rgba).convert("RGB")
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        notes.append(f"{im.mode} stretched to 8 bits")
        scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")
    if im.mode in ("L", "RGB"):
        return im
    if im.mode == "1":
        return im.convert("L")
    notes.append(f"{im.mode} converted to RGB")
    return im.convert("RGB")


def prepare(image: Image.Image, spec: InputSpec, notes: list[str] | None = None) -> Prepared:
    """Model input for ``image`` (an 8-bit L or RGB image from ``load_image``), following ``spec``."""
    notes = list(notes or [])
    mode = "L" if spec.channels == 1 else "RGB"
    if spec.channels not in (1, 3):
        raise ValueError(f"model metadata: {spec.channels} input channels; the demo handles 1 or 3")
    if image.mode == mode and image.size == (spec.width, spec.height):
        notes.append(f"already {spec.width}x{spec.height} {mode}: used as is")
        seen = image
    elif spec.dark_background:
        seen = _dark_background(image.convert(mode), spec, notes)
    else:
        seen = _resize_center_crop(image.convert(mode), spec, notes)
    a = np.asarray(seen, dtype=np.float32) / 255.0
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    mean = np.asarray(spec.mean, np.float32)[:, None, None]
    std = np.asarray(spec.std, np.float32)[:, None, None]
    return Prepared(np.ascontiguousarray(((a - mean) / std)[None]), seen, notes)


def _border(a: np.ndarray) -> np.ndarray:
    """The outer ring (about 4% of the shorter side, at least 1 px) of an HxW[xC] array."""
    r = max(1, round(0.04 * min(a.shape[:2])))
    return np.concatenate([a[:r].reshape(-1), a[-r:].reshape(-1), a[:, :r].reshape(-1), a[:, -r:].reshape(-1)])


def _dark_background(im: Image.Image, spec: InputSpec, notes: list[str]) -> Image.Image:
    """Make a photo look like a dark-background dataset's image: light object on black, trimmed to it, longest
    side filling."""
    a = np.asarray(im, dtype=np.float32)
    if _border(a).mean() > 127.5:
        a = 255.0 - a
        notes.append("inverted (bright border; the model expects light objects on black)")
    background, top = float(np.median(_border(a))), float(np.percentile(a, 99.5))
    if top > background + 1.0:
        a = np.clip((a - background) * (255.0 / (top - background)), 0.0, 255.0)
        notes.append(f"background level {background:.0f} set to black, contrast stretched")
    box = _object_box(a if a.ndim == 2 else a.mean(axis=2))
    if box is not None and box != (0, 0, a.shape[1], a.shape[0]):
        x0, y0, x1, y1 = box
        a = a[y0:y1, x0:x1]
        notes.append(f"trimmed to the object ({x1 - x0}x{y1 - y0})")
    h, w = a.shape[:2]
    side = max(w, h)
    square = np.zeros((side, side, *a.shape[2:]), np.float32)
    square[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = a
    if w != h:
        notes.append(f"padded to {side}x{side}")
    notes.append(f"resized to {spec.width}x{spec.height} (Lanczos, antialiased)")
    levelled = Image.fromarray(np.round(square).astype(np.uint8), mode=im.mode)
    return levelled.resize((spec.width, spec.height), Image.Resampling.LANCZOS)


def _object_box(lum: np.ndarray, level: float = 0.1 * 255, share: float = 0.01) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) of the bright object: rows/columns where over ``share`` of the pixels
    exceed ``level`` (so that specks of noise do not count); None when nothing stands out."""
    mask = lum > level
    cols = np.flatnonzero(mask.sum(axis=0) > share * mask.shape[0])
    rows = np.flatnonzero(mask.sum(axis=1) > share * mask.shape[1])
    if not len(cols) or not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _resize_center_crop(im: Image.Image, spec: InputSpec, notes: list[str]) -> Image.Image:
    """The dataset registry's eval geometry (the one training and evaluation use): shorter side to size / 0.875,
    center crop."""
    if spec.width != spec.height:
        raise ValueError(f"model metadata: non-square input {spec.width}x{spec.height}; the demo handles squares")
    w, h = im.size
    short = round(spec.height / CROP_FRACTION)
    rw, rh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)  # as torchvision's Resize
    notes.append(f"resized to {rw}x{rh}, center-cropped to {spec.width}x{spec.height}")
    return eval_geometry(spec.height)(im)
