"""The post-training fits and figures, checked against definitions and known answers."""

from __future__ import annotations

import numpy as np
import pytest

from training import calibrate


def test_auroc_equals_the_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    neg = rng.integers(0, 20, 300).astype(float)
    pos = rng.integers(5, 25, 200).astype(float)
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert calibrate.auroc(neg, pos) == pytest.approx(pairs, abs=1e-12)
    assert calibrate.auroc(neg, neg + 100) == 1.0


def test_fit_temperature_recovers_an_overconfident_scale() -> None:
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 2, (20000, 10))
    p = np.exp(calibrate.log_softmax(true_logits))
    labels = np.array([rng.choice(10, p=row) for row in p])
    temperature = calibrate.fit_temperature(true_logits * 3.0, labels)
    assert temperature == pytest.approx(3.0, rel=0.05)


def test_ece_is_near_zero_when_calibrated_and_large_when_not() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (20000, 10))
    p = np.exp(calibrate.log_softmax(logits))
    labels = np.array([rng.choice(10, p=row) for row in p])
    assert calibrate.expected_calibration_error(p, labels) < 0.01
    sharp = np.exp(calibrate.log_softmax(logits * 4))
    assert calibrate.expected_calibration_error(sharp, labels) > 0.1


def test_logistic_fit_separates_and_orders_by_energy() -> None:
    rng = np.random.default_rng(3)
    digits, others = rng.normal(-10, 1, 1000), rng.normal(-4, 1, 1000)
    fit = calibrate.fit_logistic(digits, others)
    assert fit.weight > 0
    assert fit(digits).mean() < 0.05 and fit(others).mean() > 0.95
    assert fit(np.array([-7.0]))[0] == pytest.approx(0.5, abs=0.05)


def test_fpr_at_95_tpr_and_threshold() -> None:
    digits, others = np.linspace(0, 1, 101), np.linspace(0.5, 1.5, 101)
    assert calibrate.fpr_at_tpr(digits, others) == pytest.approx(0.45, abs=0.02)
    cut = calibrate.threshold_for_rate(digits, 0.01)
    assert (digits > cut).mean() <= 0.01
