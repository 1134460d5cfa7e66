"""Pen strokes drawn like handwriting, and MNIST's own normalisation of the result.

A drawing is a list of segments ((x0, y0), (x1, y1)) in any coordinates, y pointing down.
`render` slants, rotates, stretches and wobbles it, draws it with a round pen at four times the
final resolution, then `mnist_style` does what MNIST did to every digit (and what the service
does to every encoded image): crop the ink, fit the longest side to 20 px with anti-aliasing,
and paste it into 28x28 with its centre of mass at the centre.

Glyphs come from the Hershey stroke fonts (`hershey-fonts` on PyPI, shipped in the package: no
download), which include script, cursive, gothic, Greek, Cyrillic and Japanese sets.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

Images = npt.NDArray[np.uint8]
Segment = tuple[tuple[float, float], tuple[float, float]]

SIDE, FIT = 28, 20
# Strokes are drawn at this multiple of the final size, then averaged down (anti-aliasing).
OVERSAMPLE = 4


@functools.cache
def _font(name: str) -> object:
    from HersheyFonts import HersheyFonts  # type: ignore[import-untyped]  # noqa: PLC0415 - on first use

    font = HersheyFonts()
    font.load_default_font(name)
    return font


def glyph(font: str, char: str) -> list[Segment]:
    """The strokes of one character in a Hershey font (font units, y down)."""
    segments = _font(font).lines_for_text(char)  # type: ignore[attr-defined]
    return [((float(a[0]), float(a[1])), (float(b[0]), float(b[1]))) for a, b in segments]


def mnist_style(image: npt.NDArray[np.floating] | Images) -> Images:
    """Any-size grey image, ink bright → uint8 28x28: ink cropped, fitted to 20 px, centred by
    mass. Blank images come back black."""
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.max() <= 0:
        return np.zeros((SIDE, SIDE), np.uint8)
    pixels = pixels * (255.0 / pixels.max())
    rows, cols = np.nonzero(pixels > 0.25 * 255)
    crop = pixels[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = FIT / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    small = np.asarray(
        Image.fromarray(crop.astype(np.uint8)).resize(size, Image.Resampling.LANCZOS),
        dtype=np.float32,
    )
    total = small.sum() or 1.0
    cy = (small.sum(axis=1) * np.arange(small.shape[0])).sum() / total
    cx = (small.sum(axis=0) * np.arange(small.shape[1])).sum() / total
    top = int(np.clip(round(SIDE / 2 - cy), 0, SIDE - small.shape[0]))
    left = int(np.clip(round(SIDE / 2 - cx), 0, SIDE - small.shape[1]))
    out = np.zeros((SIDE, SIDE), np.float32)
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return np.clip(out, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Pen:
    """How a drawing is distorted and inked; each value is the largest excursion drawn."""

    width: tuple[float, float] = (1.2, 3.6)  # pen width in final pixels (on the 20 px box)
    slant: float = 0.35  # horizontal shear
    rotation_deg: float = 12.0
    aspect: float = 0.25  # relative stretch of one axis against the other
    wobble: float = 0.04  # smooth displacement, relative to the drawing's size
    jitter: float = 0.01  # per-point noise, relative to the drawing's size


def _wobble(rng: np.random.Generator, points: npt.NDArray[np.float64], amount: float) -> object:
    """A smooth random displacement field: a few low-frequency sines per axis."""
    k = rng.normal(0, 1.5, (3, 2))
    phase = rng.uniform(0, 2 * np.pi, (3, 2))
    amp = rng.normal(0, amount, (3, 2))
    shift = np.zeros_like(points)
    for i in range(3):
        for axis in range(2):
            arg = k[i, 0] * points[:, 0] + k[i, 1] * points[:, 1] + phase[i, axis]
            shift[:, axis] += amp[i, axis] * np.sin(arg * 2 * np.pi)
    return shift


def render(rng: np.random.Generator, segments: list[Segment], pen: Pen = Pen()) -> Images:
    """Distort and draw `segments` with a random pen, then normalise as MNIST did."""
    if not segments:
        return np.zeros((SIDE, SIDE), np.uint8)
    points = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    points -= points.mean(axis=0)
    size = float(np.abs(points).max()) or 1.0
    points /= size
    angle = np.deg2rad(rng.uniform(-pen.rotation_deg, pen.rotation_deg))
    stretch = 1 + rng.uniform(-pen.aspect, pen.aspect)
    shear = rng.uniform(-pen.slant, pen.slant)
    matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = matrix @ np.array([[stretch, shear], [0.0, 1.0 / stretch]])
    points = points @ matrix.T
    points += np.asarray(_wobble(rng, points, pen.wobble))
    points += rng.normal(0, pen.jitter, points.shape)

    # Fit the drawing into a 20 px box at OVERSAMPLE times the resolution, with a margin.
    box = FIT * OVERSAMPLE
    extent = np.ptp(points, axis=0).max() or 1.0
    points = (points - points.min(axis=0)) * (box / extent) + 4 * OVERSAMPLE
    canvas = Image.new("L", (box + 8 * OVERSAMPLE,) * 2)
    draw = ImageDraw.Draw(canvas)
    width = rng.uniform(*pen.width) * OVERSAMPLE
    r = width / 2
    for (x0, y0), (x1, y1) in points.reshape(-1, 2, 2).tolist():
        draw.line((x0, y0, x1, y1), fill=255, width=max(1, round(width)))
        for x, y in ((x0, y0), (x1, y1)):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return mnist_style(np.asarray(canvas))


def polyline(points: npt.NDArray[np.float64]) -> list[Segment]:
    pts = [(float(x), float(y)) for x, y in points]
    return list(itertools.pairwise(pts))


def trajectory(rng: np.random.Generator) -> list[Segment]:
    """One to three smooth random pen paths: a point with momentum, turning at random."""
    segments: list[Segment] = []
    for _ in range(int(rng.integers(1, 4))):
        steps = int(rng.integers(15, 60))
        heading = rng.uniform(0, 2 * np.pi)
        turn = rng.normal(0, 0.35, steps).cumsum() * rng.choice([0.3, 1.0])
        speed = rng.uniform(0.5, 1.5)
        moves = speed * np.stack([np.cos(heading + turn), np.sin(heading + turn)], axis=1)
        start = rng.uniform(-6, 6, 2)
        segments += polyline(np.vstack([start, start + moves.cumsum(axis=0)]))
    return segments
