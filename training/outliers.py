"""Images that are not handwritten digits, made here from a seed: the "not a digit" examples.

Each kind is a function `(rng, count, digits) -> uint8 [count,28,28]`; `digits` are MNIST images
some kinds start from (inverted, shredded). Training draws from `TRAIN_KINDS` with one seed,
evaluation from every kind with another seed, and `HELD_OUT_KINDS` never appear in training, so
the evaluation also shows how the score does on kinds of non-digit it has never seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from training import data, handwriting

Images = npt.NDArray[np.uint8]
Kind = Callable[[np.random.Generator, int, Images], Images]

# Letters that do not look like a digit (no O/o, I/l, S/s, Z/z, B, G, g, q, b, T, A, Y...).
TRAIN_LETTERS = "CEFHKMNRUVWXcefhkmnrvwx"
# Held out: never trained on, only measured.
HELD_OUT_LETTERS = "DJLPdjpy#@&%?"


def gaussian_noise(rng: np.random.Generator, count: int, digits: Images) -> Images:
    mean = rng.uniform(0, 255, (count, 1, 1))
    std = rng.uniform(20, 120, (count, 1, 1))
    return np.clip(rng.normal(mean, std, (count, 28, 28)), 0, 255).astype(np.uint8)


def uniform_noise(rng: np.random.Generator, count: int, digits: Images) -> Images:
    return rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)


def sparse_noise(rng: np.random.Generator, count: int, digits: Images) -> Images:
    """Salt on black: a few to a few hundred bright pixels."""
    density = rng.uniform(0.005, 0.3, (count, 1, 1))
    return ((rng.random((count, 28, 28)) < density) * 255).astype(np.uint8)


def blank(rng: np.random.Generator, count: int, digits: Images) -> Images:
    """Flat images, black to white, some with faint noise."""
    level = rng.integers(0, 256, (count, 1, 1))
    faint = rng.normal(0, 1, (count, 28, 28)) * rng.uniform(0, 6, (count, 1, 1))
    return np.clip(level + faint, 0, 255).astype(np.uint8)


def inverted_digits(rng: np.random.Generator, count: int, digits: Images) -> Images:
    """Black digits on white: what a client sends when it skips the polarity step."""
    return (255 - digits[rng.integers(0, len(digits), count)]).astype(np.uint8)


def shredded_digits(rng: np.random.Generator, count: int, digits: Images) -> Images:
    """Digits cut into 7x7 tiles and shuffled: digit-like strokes, no digit."""
    picked = digits[rng.integers(0, len(digits), count)].reshape(count, 4, 7, 4, 7)
    tiles = picked.transpose(0, 1, 3, 2, 4).reshape(count, 16, 7, 7)
    shuffled = np.take_along_axis(
        tiles, rng.permuted(np.tile(np.arange(16), (count, 1)), axis=1)[:, :, None, None], axis=1
    )
    return shuffled.reshape(count, 4, 4, 7, 7).transpose(0, 1, 3, 2, 4).reshape(count, 28, 28)


def _draw(count: int, paint: Callable[[ImageDraw.ImageDraw, int], None]) -> Images:
    out = np.empty((count, 28, 28), dtype=np.uint8)
    for i in range(count):
        image = Image.new("L", (28, 28))
        paint(ImageDraw.Draw(image), i)
        out[i] = np.asarray(image)
    return out


def shapes(rng: np.random.Generator, count: int, digits: Images) -> Images:
    """Filled or outlined boxes, several circles, crosses and grids: geometry, not handwriting."""

    def paint(draw: ImageDraw.ImageDraw, _: int) -> None:
        for _ in range(rng.integers(2, 5)):
            x0, y0 = rng.integers(0, 20, 2)
            x1, y1 = x0 + rng.integers(4, 14), y0 + rng.integers(4, 14)
            width = int(rng.integers(1, 3))
            choice = rng.integers(0, 3)
            if choice == 0:
                draw.rectangle(
                    (x0, y0, x1, y1),
                    outline=255,
                    width=width,
                    fill=255 if rng.random() < 0.3 else None,
                )
            elif choice == 1:
                draw.ellipse((x0, y0, x1, y1), outline=255, width=width)
            else:
                draw.line((x0, y0, x1, y1), fill=255, width=width)
                draw.line((x0, y1, x1, y0), fill=255, width=width)

    return _draw(count, paint)


def scribbles(rng: np.random.Generator, count: int, digits: Images) -> Images:
    """Long random-walk strokes that cross themselves: what a bored user draws."""

    def paint(draw: ImageDraw.ImageDraw, _: int) -> None:
        steps = rng.normal(0, 4, (int(rng.integers(12, 30)), 2)).cumsum(axis=0)
        points = np.clip(steps - steps.mean(axis=0) + 14, 2, 25)
        draw.line([tuple(p) for p in points.tolist()], fill=255, width=int(rng.integers(2, 4)))

    return _draw(count, paint)


def _letters(alphabet: str) -> Kind:
    def kind(rng: np.random.Generator, count: int, digits: Images) -> Images:
        def paint(draw: ImageDraw.ImageDraw, _: int) -> None:
            font = ImageFont.load_default(size=int(rng.integers(18, 26)))
            letter = alphabet[int(rng.integers(0, len(alphabet)))]
            centre = (14.0 + rng.integers(-2, 3), 14.0 + rng.integers(-2, 3))
            draw.text(
                centre,
                letter,
                fill=255,
                font=font,
                anchor="mm",
                stroke_width=int(rng.integers(0, 2)),
                stroke_fill=255,
            )

        return _draw(count, paint)

    return kind


TRAIN_KINDS: dict[str, Kind] = {
    "gaussian_noise": gaussian_noise,
    "uniform_noise": uniform_noise,
    "sparse_noise": sparse_noise,
    "blank": blank,
    "inverted_digits": inverted_digits,
    "shapes": shapes,
    "letters": _letters(TRAIN_LETTERS),
}
HELD_OUT_KINDS: dict[str, Kind] = {
    "shredded_digits": shredded_digits,
    "scribbles": scribbles,
    "held_out_letters": _letters(HELD_OUT_LETTERS),
}


def generate(
    kinds: dict[str, Kind], count_per_kind: int, digits: Images, seed: int
) -> dict[str, Images]:
    """`count_per_kind` images of each kind, the same for the same seed."""
    return {
        name: make(np.random.default_rng([seed, index]), count_per_kind, digits)
        for index, (name, make) in enumerate(kinds.items())
    }


TRAIN_PER_KIND = 6000
VAL_PER_KIND = 500
FASHION_VAL = 5000
STYLE_TRAIN_PER_KIND = 5000


@dataclass(frozen=True)
class Pools:
    train: Images
    val: Images
    description: dict[str, object]
    # Digits in other styles, labelled: trained on as digits, and counted as digits in the fit.
    styles_train: data.Split | None = None
    styles_val: data.Split | None = None


def _joined(splits: dict[str, data.Split]) -> data.Split:
    return data.Split(
        np.concatenate([s.images for s in splits.values()]),
        np.concatenate([s.labels for s in splits.values()]),
    )


def training_pools(
    fashion_dir: Path, train: data.Split, val: data.Split, seed: int, scale: float = 1.0
) -> Pools:
    """Outliers to train on and to fit the score on: Fashion-MNIST's training split, split by a
    seeded shuffle, and the generated training kinds (validation kinds start from validation
    digits, so no validation image is a variant of a training one). `scale` < 1 makes fewer
    generated images (smoke runs)."""
    per_kind, per_style = int(TRAIN_PER_KIND * scale), int(STYLE_TRAIN_PER_KIND * scale)
    val_per_kind = max(20, int(VAL_PER_KIND * scale))
    fashion = data.load_split(fashion_dir, "train").images
    order = np.random.default_rng(seed).permutation(len(fashion))
    fashion_val, fashion_train = fashion[order[:FASHION_VAL]], fashion[order[FASHION_VAL:]]
    made_train = generate(TRAIN_KINDS, per_kind, train.images, seed)
    made_val = generate(TRAIN_KINDS, val_per_kind, val.images, seed + 1)
    kinds = handwriting.NON_DIGIT_KINDS
    drawn_train = handwriting.generate(kinds, per_kind, train, seed)
    drawn_val = handwriting.generate(kinds, val_per_kind, val, seed + 1)
    styles = handwriting.style_kinds(system_fonts=True)
    styles_train = handwriting.generate_styles(styles, per_style, train, seed)
    styles_val = handwriting.generate_styles(styles, val_per_kind, val, seed + 1)
    return Pools(
        train=np.concatenate([fashion_train, *made_train.values(), *drawn_train.values()]),
        val=np.concatenate([fashion_val, *made_val.values(), *drawn_val.values()]),
        styles_train=_joined(styles_train),
        styles_val=_joined(styles_val),
        description={
            "fashion_mnist_train": {
                "train": len(fashion_train),
                "val": len(fashion_val),
                "sha256": data.dataset_checksums(fashion_dir),
            },
            "generated": {
                "kinds": list(TRAIN_KINDS),
                "train_per_kind": per_kind,
                "val_per_kind": val_per_kind,
            },
            "handwriting": {
                "kinds": list(kinds),
                "train_per_kind": per_kind,
                "val_per_kind": val_per_kind,
            },
            "digit_styles": {
                "kinds": list(styles),
                "train_per_kind": per_style,
                "val_per_kind": val_per_kind,
                "system_fonts": [p.name for p in handwriting.system_fonts()],
            },
            "held_out_kinds": list(HELD_OUT_KINDS) + list(handwriting.UNSEEN_NON_DIGIT_KINDS),
        },
    )
