"""Generated handwriting: MNIST's normalisation, reproducible kinds, labelled digit styles, and
a not-a-digit score whose graph computes what numpy computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training import data, handwriting, ood, score, strokes
from training.config import DEFAULTS


@pytest.fixture(scope="module")
def test_digits(mnist_dir: Path) -> data.Split:
    split = data.load_split(mnist_dir, "test")
    return data.Split(split.images[:500], split.labels[:500])


def test_mnist_style_fits_20_px_and_centres_the_mass() -> None:
    image = np.zeros((200, 90), np.float32)
    image[20:180, 30:60] = 1.0  # a tall bar, off centre
    out = strokes.mnist_style(image).astype(np.float64)
    rows, _ = np.nonzero(out > 64)
    assert np.ptp(rows) + 1 in (19, 20, 21)
    total = out.sum()
    centre = (
        (out.sum(1) * np.arange(28)).sum() / total,
        (out.sum(0) * np.arange(28)).sum() / total,
    )
    assert centre == pytest.approx((14.0, 14.0), abs=0.6)
    assert strokes.mnist_style(np.zeros((5, 5))).max() == 0


def test_the_kinds_draw_only_glyphs_their_fonts_have() -> None:
    fonts = handwriting.LATIN_FONTS + handwriting.ALPHABET_FONTS + handwriting.SYMBOL_FONTS
    for font in fonts:
        chars = (
            handwriting.SYMBOL_CHARS if font in handwriting.SYMBOL_FONTS else handwriting.LETTERS
        )
        drawable = handwriting._drawable(font, chars)
        assert len(drawable) >= 12, font
        assert all(strokes.glyph(font, c) for c in drawable), font
        assert not set(drawable) & set(handwriting.EXCLUDED.get(font, "")), font
    for font in handwriting.LATIN_FONTS:
        assert all(strokes.glyph(font, str(d)) for d in range(10)), font


@pytest.mark.parametrize(
    "name", [*handwriting.NON_DIGIT_KINDS, *handwriting.UNSEEN_NON_DIGIT_KINDS]
)
def test_non_digit_kinds_are_reproducible_inked_images(name: str, test_digits: data.Split) -> None:
    kind = {**handwriting.NON_DIGIT_KINDS, **handwriting.UNSEEN_NON_DIGIT_KINDS}[name]
    first = kind(np.random.default_rng(7), 12, test_digits)
    again = kind(np.random.default_rng(7), 12, test_digits)
    assert first.shape == (12, 28, 28) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert (first.reshape(12, -1).max(1) > 128).all()  # every image has ink


@pytest.mark.parametrize("name", list(handwriting.style_kinds(system_fonts=False)))
def test_digit_styles_keep_their_labels(name: str, test_digits: data.Split) -> None:
    kind = handwriting.style_kinds(system_fonts=False)[name]
    images, labels = kind(np.random.default_rng(3), 40, test_digits)
    assert images.shape == (40, 28, 28) and labels.shape == (40,)
    assert set(labels.tolist()) <= set(range(10))
    again, _ = kind(np.random.default_rng(3), 40, test_digits)
    np.testing.assert_array_equal(images, again)


def test_pen_paths_are_not_thin_strokes(test_digits: data.Split) -> None:
    paths = handwriting.pen_paths(np.random.default_rng(1), 30, test_digits)
    assert all(handwriting.wide(p) for p in paths)
    bar = np.zeros((28, 28), np.uint8)
    bar[4:24, 12:15] = 255
    assert not handwriting.wide(bar)


def test_evaluation_sets_use_a_seed_no_training_run_uses() -> None:
    seeds = {cfg.seed for cfg in DEFAULTS.values()}
    assert ood.EVAL_SEED not in seeds | {s + 1 for s in seeds}


def test_layer_score_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    labels = np.arange(300) % 10
    gaussian = score.fit_gaussian(x, labels)
    layer_score = score.LayerScore(("maha_fc1",), {"fc1": gaussian}, None, np.ones(1), 0.0)
    acts = {"fc1": torch.tensor(x[:5], dtype=torch.float32)}
    got = layer_score.features(torch.zeros(5, 1, 28, 28), acts, torch.zeros(5, 10))
    precision = gaussian.factor @ gaussian.factor.T
    diffs = x[:5, None, :] - gaussian.means[None]
    expected = np.log(np.einsum("ncd,de,nce->nc", diffs, precision, diffs).min(1) + 1)
    np.testing.assert_allclose(got[:, 0].numpy(), expected, rtol=1e-4)


def test_fit_logistic_separates_two_clouds() -> None:
    rng = np.random.default_rng(0)
    digits, others = rng.normal(0, 1, (500, 3)), rng.normal(3, 1, (500, 3))
    weights, bias = score.fit_logistic(digits, others)
    p_digits = 1 / (1 + np.exp(-(digits @ weights + bias)))
    p_others = 1 / (1 + np.exp(-(others @ weights + bias)))
    assert p_digits.mean() < 0.1 and p_others.mean() > 0.9


def test_quadratic_score_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    coords = rng.normal(size=(400, 5)) * np.arange(1, 6)
    labels = np.arange(400) % 10
    quadratic = score.fit_quadratic(coords, labels)
    pca = score.Pca(np.zeros(784), np.eye(784)[:, :5])
    layer_score = score.LayerScore(("qda_input",), {}, pca, np.ones(1), 0.0, quadratic)
    image = torch.zeros(6, 1, 28, 28)
    image.view(6, -1)[:, :5] = torch.tensor(coords[:6], dtype=torch.float32)
    got = layer_score.features(image, {}, torch.zeros(6, 10))[:, 0].numpy()
    expected = []
    for x in coords[:6]:
        per_class = []
        for c in range(10):
            members = coords[labels == c]
            cov = np.cov(members.T) + 1e-3 * np.eye(5)
            d = x - members.mean(axis=0)
            per_class.append(d @ np.linalg.inv(cov) @ d + np.linalg.slogdet(cov)[1])
        expected.append(min(per_class))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
