"""Client images → the model's input: float32 [28,28] in [0,1], a light digit on black, as in MNIST.

Encoded images go through MNIST's own recipe (LeCun et al.): grey, ink cropped, the longest side
fitted to 20 px with anti-aliasing, then pasted into 28x28 so the centre of mass sits at (14,14).
Raw pixels are checked and used as given; a V2 tensor's are sanitised (`sanitised`). Only numpy
and Pillow here: this runs on the request path, so every step is a vectorised array operation or
a Pillow call, never a loop over pixels.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import InvalidInput
from service.names import FloatArray

SIDE = 28
FIT = 20
# MNIST's centres of mass average (13.99, 14.00) in row/column index coordinates.
CENTRE = 14.0
PIXELS = SIDE * SIDE
# Below this fraction of the brightest ink is noise for the bounding box; between 8-bit levels.
BBOX_FRACTION = 0.25
# Less contrast than this (on a 0..1 scale) between ink and background is a blank image.
MIN_CONTRAST = 0.1
# Larger images are block-averaged down to 1x-2x this side first: 20 px of ink needs no more.
WORK_SIDE = 512
# Raw pixels may carry float32 rounding from the client's own scaling.
PIXEL_TOLERANCE = 1e-6
# Anti-aliased both ways: most crops shrink, a tiny digit in a small image grows.
RESAMPLE = Image.Resampling.LANCZOS
FORMATS = ("PNG", "JPEG")
# First bytes of formats clients send by mistake, so the error can name what it found.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"<svg", "SVG"),
    (b"<?xml", "XML"),
)
# Full scale per grey mode; a 16-bit PNG loads as "I;16", or as "I" on older Pillow.
_SCALE = {"L": 255.0, "I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I": 65535.0}

Pixels = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ImageLimits:
    """What one encoded image may cost before it is decoded; past these it is rejected."""

    max_encoded_bytes: int = 8 * 1024 * 1024
    """Size of the encoded file."""
    max_pixels: int = 16_000_000
    """Declared width x height, checked before decoding (decompression bombs)."""
    max_side: int = 8192
    """Declared width or height."""


def decode_image(
    data: bytes, *, index: int, limits: ImageLimits, field: str | None = None
) -> Pixels:
    """A PNG or JPEG of any size, colour or polarity → MNIST-style float32 [28,28] in [0,1].

    A blank image (no ink) gives all zeros: the model's not-a-digit score judges it.
    Raises InvalidInput naming `field` (default `images[index].encoded`) for anything
    unreadable or too large.
    """
    field = field or f"images[{index}].encoded"
    if not data:
        raise InvalidInput(f"{field}: empty; send a PNG or JPEG file")
    if len(data) > limits.max_encoded_bytes:
        raise InvalidInput(
            f"{field}: {len(data)} bytes, more than the limit of {limits.max_encoded_bytes}"
        )
    grey = _to_grey(_open(data, field, limits), field)
    return _mnist_normalise(_shrink(grey))


def from_pixels(values: Sequence[float] | npt.ArrayLike, *, index: int) -> Pixels:
    """784 raw values in [0,1], row-major → float32 [28,28], used exactly as given (no centring)."""
    field = f"images[{index}].pixels.data"
    try:
        array = np.asarray(values, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{field}: not a flat list of numbers ({exc})") from None
    if array.size != PIXELS:
        raise InvalidInput(f"{field}: want {PIXELS} values, got {array.size}")
    finite = np.isfinite(array)
    if not finite.all():
        at = int(np.flatnonzero(~finite)[0])
        raise InvalidInput(f"{field}: value {at} is {array[at]}; values must be finite")
    outside = (array < -PIXEL_TOLERANCE) | (array > 1.0 + PIXEL_TOLERANCE)
    if outside.any():
        at = int(np.flatnonzero(outside)[0])
        raise InvalidInput(f"{field}: value {at} is {array[at]:g}; values must be in [0, 1]")
    return np.clip(array, 0.0, 1.0).reshape(SIDE, SIDE)


def sanitised(n: int, data: bytes | Sequence[float] | FloatArray) -> FloatArray:
    """A V2 tensor's pixels, raw little-endian FP32 bytes or floats → float32 [n,1,28,28] in
    [0,1]. Non-finite pixels (perf_analyzer's random data has them) become 0 or 1 and every pixel
    is clipped, so the answer is always finite."""
    if isinstance(data, bytes | bytearray | memoryview):
        flat = np.frombuffer(data, dtype="<f4")
    else:
        flat = np.asarray(data, dtype=np.float32)
    # fmax and fmin return the number when one operand is NaN: NaN → 0, -inf → 0, +inf → 1.
    pixels: FloatArray = np.fmax(flat.reshape(n, 1, SIDE, SIDE), np.float32(0.0))
    np.fmin(pixels, np.float32(1.0), out=pixels)
    return pixels


def _open(data: bytes, field: str, limits: ImageLimits) -> Image.Image:
    """Open (header only), check the declared size, then decode and apply EXIF orientation."""
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        found = _sniff(data)
        if found in FORMATS:
            raise InvalidInput(f"{field}: corrupt {found} image") from None
        raise InvalidInput(f"{field}: unsupported format ({found}); send PNG or JPEG") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard (Image.MAX_IMAGE_PIXELS, left at its default) fired before ours.
        raise InvalidInput(f"{field}: image too large ({exc})") from None
    except Exception as exc:
        # Pillow raises many types on hostile input (OSError, SyntaxError, struct.error, ...).
        raise InvalidInput(f"{field}: cannot read image ({exc})") from None
    width, height = image.size
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        image.close()
        raise InvalidInput(
            f"{field}: {width}x{height} is too large (limits: {limits.max_pixels} pixels, "
            f"{limits.max_side} per side)"
        )
    try:
        # A JPEG decodes at 1/2, 1/4 or 1/8 scale almost for free; _shrink would average anyway.
        image.draft("L", (WORK_SIDE, WORK_SIDE))
        image.load()
    except Exception as exc:
        # Truncated or corrupt pixel data surfaces only when decoding; it is the client's input.
        raise InvalidInput(f"{field}: corrupt {image.format} image ({exc})") from None
    # Unreadable orientation metadata leaves good pixels: keep them as stored.
    with contextlib.suppress(Exception):
        ImageOps.exif_transpose(image, in_place=True)
    return image


def _sniff(data: bytes) -> str:
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        return f"ISO media ({data[8:12].decode('ascii', 'replace').strip()})"
    return "unrecognised data"


def _to_grey(image: Image.Image, field: str) -> Pixels:
    """Any Pillow mode → float32 grey in [0,1], transparency composited onto a background."""
    try:
        transparent = image.info.get("transparency")
        if image.mode in _SCALE and isinstance(transparent, int):
            # One grey value marked transparent (PNG tRNS); via RGBA would clip 16-bit grey.
            raw = np.asarray(image)
            alpha = (raw != transparent).astype(np.float32)
            return _composite(raw.astype(np.float32) / np.float32(_SCALE[image.mode]), alpha)
        if image.mode in ("LA", "PA", "RGBA", "RGBa") or transparent is not None:
            rgba = image.convert("RGBA")
            grey = np.asarray(rgba.convert("L"), dtype=np.float32) / 255.0
            alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
            return _composite(grey, alpha)
        if image.mode not in _SCALE:
            image = image.convert("L")
        return np.asarray(image, dtype=np.float32) / np.float32(_SCALE[image.mode])
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{field}: cannot convert {image.mode} image ({exc})") from None


def _composite(grey: Pixels, alpha: Pixels) -> Pixels:
    """Flatten transparency onto a background that keeps the ink visible.

    An app's canvas usually exports strokes on a transparent background whose hidden colour is
    black; mostly transparent means the visible pixels are the ink, so the background must
    contrast with them. Mostly opaque means the picture has its own background: extend it.
    """
    visible = grey[alpha >= 0.5]
    if visible.size == 0:
        return np.zeros_like(grey)
    # A strided sample is enough for a median and bounds its cost on large images.
    level = float(np.median(visible[:: max(1, visible.size // 65536)]))
    contrasting = 1.0 if level < 0.5 else 0.0
    background = contrasting if visible.size * 2 < grey.size else level
    out: Pixels = grey * alpha + np.float32(background) * (np.float32(1.0) - alpha)
    return out


def _shrink(grey: Pixels) -> Pixels:
    """Average whole blocks so the longest side is under 2 * WORK_SIDE; later steps cost less."""
    # Never past the short side: a 8192x1 strip must not average down to nothing.
    factor = min(max(grey.shape) // WORK_SIDE, *grey.shape)
    if factor < 2:
        return grey
    rows, cols = grey.shape[0] // factor, grey.shape[1] // factor
    blocks = grey[: rows * factor, : cols * factor].reshape(rows, factor, cols, factor)
    shrunk: Pixels = blocks.mean(axis=(1, 3), dtype=np.float32)
    return shrunk


def _mnist_normalise(grey: Pixels) -> Pixels:
    """Grey image → light ink on black, cropped, fitted to 20 px, centred by mass in 28x28."""
    border = np.concatenate((grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]))
    background = float(np.median(border))
    low, high = float(grey.min()), float(grey.max())
    # The background is whichever extreme the border is nearer: dark ink on light paper inverts.
    if background - low > high - background:
        ink = np.float32(background) - grey
    else:
        ink = grey - np.float32(background)
    np.maximum(ink, 0.0, out=ink)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        return np.zeros((SIDE, SIDE), dtype=np.float32)

    mask = ink >= peak * BBOX_FRACTION
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    height, width = crop.shape
    scale = FIT / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    fitted = Image.fromarray(np.ascontiguousarray(crop)).resize(size, RESAMPLE)
    patch = np.asarray(fitted, dtype=np.float32)
    # Lanczos rings slightly below zero next to strokes; MNIST has no negative ink.
    patch = np.maximum(patch, 0.0)

    mass = float(patch.sum())
    if mass <= 0.0:
        return np.zeros((SIDE, SIDE), dtype=np.float32)
    centre_row = float(patch.sum(axis=1) @ np.arange(patch.shape[0])) / mass
    centre_col = float(patch.sum(axis=0) @ np.arange(patch.shape[1])) / mass
    # Clamped so a lopsided digit keeps all its ink rather than its exact centring.
    top = min(max(round(CENTRE - centre_row), 0), SIDE - patch.shape[0])
    left = min(max(round(CENTRE - centre_col), 0), SIDE - patch.shape[1])

    canvas = np.zeros((SIDE, SIDE), dtype=np.float32)
    canvas[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    canvas /= canvas.max()
    return canvas
