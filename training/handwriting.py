"""Generated images that look like handwriting: non-digits to reject, and digits in other styles
to accept.

Non-digit kinds `(rng, count, digits) -> uint8 [count,28,28]`: letters and symbols drawn with
stroke fonts, random pen paths, fragments and pairs of digits, mirrored digits. Digit-style kinds
`(rng, count, digits) -> (images, labels)`: digits drawn with stroke fonts and typeset fonts,
low-resolution, blurred, thick and thin digits, labelled with their digit, so the not-a-digit
score learns that these are digits. `digits` is an MNIST split some kinds start from. Everything
goes through `strokes.mnist_style`, the normalisation MNIST and the service apply.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from training.data import Split
from training.strokes import OVERSAMPLE, Images, Pen, glyph, mnist_style, render, trajectory

Labels = npt.NDArray[np.int64]
Kind = Callable[[np.random.Generator, int, Split], Images]
StyleKind = Callable[[np.random.Generator, int, Split], tuple[Images, Labels]]

LATIN_FONTS = [
    "futural",
    "futuram",
    "rowmand",
    "rowmans",
    "rowmant",
    "timesr",
    "timesi",
    "timesib",
    "timesrb",
    "scripts",
    "scriptc",
    "cursive",
    "gothiceng",
    "gothicger",
    "gothicita",
    "gothgbt",
    "gothgrt",
    "gothitt",
]
ALPHABET_FONTS = ["greek", "greekc", "greeks", "cyrillic", "cyrilc_1"]
SYMBOL_FONTS = ["mathlow", "mathupp", "meteorology", "music", "symbolic", "markers"]
# Never trained on: measured only, to see how the score does on a script it has not seen.
UNSEEN_FONTS = ("japanese",)
# Letters that are not digit look-alikes (no O/o/D-like 0, I/l/i/j like 1, S/s, Z/z, B, G/g, q,
# b, T, y); the other alphabets' fonts map the same ASCII letters to their own glyphs.
LETTERS = "ACDEFHJKLMNPRUVWXYacdefhkmnprtuvwx"
ALPHABET_LETTERS = "ACDEFHJKLMNPRUVWXYacdefhkmnprtuvwx"
SYMBOL_CHARS = "abcdefghijklmnopABCDEFGHIJKLMNOP"
# Glyphs that look like a digit (Greek Theta and Zeta, Cyrillic Ze and Che, circles) or are
# plain Latin letters in these fonts, by font: looked at, not guessed.
EXCLUDED = {
    "greek": "JVv",
    "greekc": "FH",
    "greeks": "FH",
    "cyrillic": "V",
    "cyrilc_1": "CHXch",
    "markers": "a",
    "mathlow": "ABCDEFGHIJKLMNOP",
    "mathupp": "ABCDEFGHIJKLMNOP",
    "symbolic": "oO",
}
# Mirrored left to right these are no digit (0, 1 and 8 mirror into themselves).
ASYMMETRIC = (2, 3, 4, 5, 6, 7, 9)
# Typeset fonts beside the stroke fonts: Pillow's own (always there) and, in training only,
# whatever TrueType fonts the machine has (not in evaluation sets: they must be reproducible).
SYSTEM_FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
HANDWRITTEN_PEN = Pen()
TYPED_PEN = Pen(width=(1.0, 3.8), slant=0.25, rotation_deg=6, aspect=0.2, wobble=0.01, jitter=0)


@functools.cache
def _drawable(font: str, chars: str) -> list[str]:
    """The characters of `chars` this font has a glyph for (Greek's `greekc` lacks Y, y, Z, z),
    less the ones it draws like a digit."""
    return [c for c in chars if c not in EXCLUDED.get(font, "") and glyph(font, c)]


def _glyphs(fonts: tuple[str, ...] | list[str], chars: str, pen: Pen = HANDWRITTEN_PEN) -> Kind:
    def kind(rng: np.random.Generator, count: int, digits: Split) -> Images:
        out = np.empty((count, 28, 28), np.uint8)
        for i in range(count):
            font = fonts[int(rng.integers(len(fonts)))]
            allowed = _drawable(font, chars)
            out[i] = render(rng, glyph(font, allowed[int(rng.integers(len(allowed)))]), pen)
        return out

    return kind


def wide(image: Images, spread: float = 2.6) -> bool:
    """Ink spread across its narrow axis by at least `spread` px (standard deviation): a thin
    stroke, straight or slanted, reads as a one after normalisation."""
    rows, cols = np.nonzero(image > 64)
    if len(rows) < 3:
        return False
    narrow = np.linalg.eigvalsh(np.cov(np.stack([rows, cols]).astype(np.float64)))[0]
    return bool(np.sqrt(max(narrow, 0.0)) >= spread)


def _wide_only(make: Callable[[], Images]) -> Images:
    for _ in range(50):
        image = make()
        if wide(image):
            return image
    return image


def pen_paths(rng: np.random.Generator, count: int, digits: Split) -> Images:
    return np.stack([_wide_only(lambda: render(rng, trajectory(rng))) for _ in range(count)])


def _pick(rng: np.random.Generator, digits: Split, allowed: tuple[int, ...]) -> Images:
    index = np.flatnonzero(np.isin(digits.labels, allowed))
    picked: Images = digits.images[index[int(rng.integers(len(index)))]]
    return picked


def digit_fragments(rng: np.random.Generator, count: int, digits: Split) -> Images:
    """A digit cut by a random line through its middle, one side kept and blown up: a stroke or
    a hook, not a digit (ones are left out: half a one is still a one)."""
    yy, xx = np.mgrid[0:28, 0:28] - 13.5
    out = np.empty((count, 28, 28), np.uint8)

    def fragment() -> Images:
        image = _pick(rng, digits, (0, 2, 3, 4, 5, 6, 7, 8, 9)).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        keep = np.cos(angle) * xx + np.sin(angle) * yy > rng.uniform(-2, 2)
        return mnist_style(image * keep)

    for i in range(count):
        out[i] = _wide_only(fragment)
    return out


def digit_pairs(rng: np.random.Generator, count: int, digits: Split) -> Images:
    """Two digits side by side, touching or overlapping a little, in one box (more overlap
    makes blobs that read as an eight or a zero)."""
    out = np.empty((count, 28, 28), np.uint8)
    for i in range(count):
        a, b = (_pick(rng, digits, tuple(range(10))) for _ in range(2))
        canvas = np.zeros((28, 56), np.float32)
        offset = int(rng.integers(11, 22))
        canvas[:, 4 : 4 + 28] = a
        canvas[:, 4 + offset : 4 + offset + 28] = np.maximum(
            canvas[:, 4 + offset : 4 + offset + 28], b
        )
        out[i] = mnist_style(canvas)
    return out


def mirrored_digits(rng: np.random.Generator, count: int, digits: Split) -> Images:
    return np.stack([_pick(rng, digits, ASYMMETRIC)[:, ::-1] for _ in range(count)])


NON_DIGIT_KINDS: dict[str, Kind] = {
    "stroke_letters": _glyphs(LATIN_FONTS, LETTERS),
    "other_alphabets": _glyphs(ALPHABET_FONTS, ALPHABET_LETTERS),
    "stroke_symbols": _glyphs(SYMBOL_FONTS, SYMBOL_CHARS),
    "pen_paths": pen_paths,
    "digit_fragments": digit_fragments,
    "digit_pairs": digit_pairs,
    "mirrored_digits": mirrored_digits,
}
UNSEEN_NON_DIGIT_KINDS: dict[str, Kind] = {"unseen_script": _glyphs(UNSEEN_FONTS, LETTERS)}


# ---- digits in other styles -------------------------------------------------------------------


def system_fonts() -> list[Path]:
    return sorted(p for d in SYSTEM_FONT_DIRS if d.is_dir() for p in d.rglob("*.ttf"))


def _typeset(rng: np.random.Generator, digit: int, font_path: Path | None) -> Images:
    size = 24 * OVERSAMPLE
    font = (
        ImageFont.truetype(str(font_path), size) if font_path else ImageFont.load_default(size=size)
    )
    canvas = Image.new("L", (2 * size, 2 * size))
    stroke = int(rng.integers(0, 3)) * OVERSAMPLE // 2
    ImageDraw.Draw(canvas).text(
        (size, size), str(digit), fill=255, font=font, anchor="mm", stroke_width=stroke,
        stroke_fill=255,
    )  # fmt: skip
    shear = rng.uniform(-0.25, 0.25)
    slanted = (1, shear, -shear * size, 0, 1, 0)
    canvas = canvas.transform(canvas.size, Image.Transform.AFFINE, slanted)
    return mnist_style(np.asarray(canvas.rotate(rng.uniform(-6, 6), Image.Resampling.BILINEAR)))


def typed_digits(system: bool) -> StyleKind:
    """Digits drawn with the stroke fonts (a random pen) and typeset with TrueType fonts."""

    def kind(rng: np.random.Generator, count: int, digits: Split) -> tuple[Images, Labels]:
        ttfs: list[Path | None] = [None, *(system_fonts() if system else [])]
        labels = rng.integers(0, 10, count)
        out = np.empty((count, 28, 28), np.uint8)
        for i, digit in enumerate(labels):
            if rng.random() < 0.6:
                font = LATIN_FONTS[int(rng.integers(len(LATIN_FONTS)))]
                out[i] = render(rng, glyph(font, str(digit)), TYPED_PEN)
            else:
                out[i] = _typeset(rng, int(digit), ttfs[int(rng.integers(len(ttfs)))])
        return out, labels.astype(np.int64)

    return kind


def _from_digits(change: Callable[[np.random.Generator, Image.Image], Image.Image]) -> StyleKind:
    """A style kind that redraws MNIST digits: `change` works on the digit at 2x, 56x56."""

    def kind(rng: np.random.Generator, count: int, digits: Split) -> tuple[Images, Labels]:
        index = rng.integers(0, len(digits), count)
        out = np.empty((count, 28, 28), np.uint8)
        for i, j in enumerate(index):
            big = Image.fromarray(digits.images[j]).resize((56, 56), Image.Resampling.BICUBIC)
            out[i] = mnist_style(np.asarray(change(rng, big)))
        return out, digits.labels[index].astype(np.int64)

    return kind


def _low_resolution(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """As in scanned 8x8 digit sets: ink thresholded, fitted to 32x32, 4x4 blocks counted into
    17 levels, then scaled back up by the client's choice of filter."""
    ink = mnist_style(np.asarray(image))
    binary = (np.asarray(Image.fromarray(ink).resize((32, 32))) > rng.uniform(60, 160)).astype(
        np.float32
    )
    levels = binary.reshape(8, 4, 8, 4).sum(axis=(1, 3)) * (255.0 / 16.0)
    small = Image.fromarray(levels.astype(np.uint8))
    method = (Image.Resampling.NEAREST, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)
    return small.resize((56, 56), method[int(rng.integers(3))])


def _blurred(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 4.0)))


def _thick(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    for _ in range(int(rng.integers(1, 4))):
        image = image.filter(ImageFilter.MaxFilter(3))
    return image


def _thin(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    # Sharpen the edge first so thinning narrows the stroke instead of fading it.
    image = image.point(lambda v: 255 if v > 100 else 0)
    return image.filter(ImageFilter.MinFilter(3)).filter(ImageFilter.GaussianBlur(0.7))


def style_kinds(system_fonts: bool) -> dict[str, StyleKind]:
    return {
        "typed_digits": typed_digits(system_fonts),
        "low_resolution_digits": _from_digits(_low_resolution),
        "blurred_digits": _from_digits(_blurred),
        "thick_digits": _from_digits(_thick),
        "thin_digits": _from_digits(_thin),
    }


def generate(kinds: dict[str, Kind], per_kind: int, digits: Split, seed: int) -> dict[str, Images]:
    return {
        name: make(np.random.default_rng([seed, 100 + i]), per_kind, digits)
        for i, (name, make) in enumerate(kinds.items())
    }


def generate_styles(
    kinds: dict[str, StyleKind], per_kind: int, digits: Split, seed: int
) -> dict[str, Split]:
    return {
        name: Split(*make(np.random.default_rng([seed, 200 + i]), per_kind, digits))
        for i, (name, make) in enumerate(kinds.items())
    }
