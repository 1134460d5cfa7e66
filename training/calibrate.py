"""Post-training fits on validation data: temperature, the not-a-digit mapping, and the figures
that judge them (expected calibration error, AUROC, false-positive rate at 95% true positives).

Everything here is numpy on arrays of logits, so the same code measures an exported graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def log_softmax(logits: npt.ArrayLike) -> FloatArray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    result: FloatArray = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return result


def energy(logits: npt.ArrayLike) -> FloatArray:
    """-logsumexp(logits): low for inputs like the training digits, higher for the rest."""
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=1)
    result: FloatArray = -(top + np.log(np.exp(z - top[:, None]).sum(axis=1)))
    return result


def log_rest(logits: npt.ArrayLike) -> FloatArray:
    """log(1 - max softmax) computed without cancellation: logsumexp of the other logits minus
    logsumexp of all. A monotone map of the max-softmax score that keeps its resolution where
    1 - max probability rounds to 0."""
    z = np.asarray(logits, dtype=np.float64)
    top = z.argmax(axis=1)
    rest = z.copy()
    rest[np.arange(len(z)), top] = -np.inf
    m = z.max(axis=1)
    result: FloatArray = np.log(np.exp(rest - m[:, None]).sum(axis=1)) - np.log(
        np.exp(z - m[:, None]).sum(axis=1)
    )
    return result


FEATURES = {"energy": energy, "log_rest": log_rest}


def nll(logits: npt.ArrayLike, labels: npt.NDArray[np.int64], temperature: float) -> float:
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: npt.ArrayLike, labels: npt.NDArray[np.int64]) -> float:
    """The T minimising validation NLL of softmax(logits / T) (Guo et al., 2017): a 1-D search."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 400))
    losses = [nll(logits, labels, t) for t in grid]
    return float(grid[int(np.argmin(losses))])


def expected_calibration_error(
    probabilities: npt.ArrayLike, labels: npt.NDArray[np.int64], bins: int = 15
) -> float:
    """Confidence vs accuracy over `bins` equal-width confidence bins, weighted by bin size."""
    p = np.asarray(probabilities, dtype=np.float64)
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            ece += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(ece)


@dataclass(frozen=True)
class Logistic:
    """not_digit = sigmoid(weight * feature(logits) + bias), `feature` one of FEATURES."""

    weight: float
    bias: float
    feature: str = "energy"

    def __call__(self, values: npt.ArrayLike) -> FloatArray:
        z = self.weight * np.asarray(values, dtype=np.float64) + self.bias
        result: FloatArray = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
        return result


def fit_logistic(
    digit_energies: npt.ArrayLike,
    other_energies: npt.ArrayLike,
    l2: float = 1e-3,
    feature: str = "energy",
) -> Logistic:
    """Logistic regression on one feature, classes weighted equally, by Newton's method.

    The small L2 penalty keeps the slope finite when the two sets barely overlap, so the score
    stays graded instead of becoming a step.
    """
    x = np.concatenate([np.asarray(digit_energies), np.asarray(other_energies)]).astype(float)
    y = np.concatenate([np.zeros(np.size(digit_energies)), np.ones(np.size(other_energies))])
    weights = np.where(y == 1, 0.5 / y.sum(), 0.5 / (1 - y).sum())
    mean, scale = x.mean(), x.std() or 1.0
    u = (x - mean) / scale  # standardised so Newton's steps are well conditioned
    w = b = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(w * u + b, -60, 60)))
        g = weights * (p - y)
        h = weights * p * (1 - p) + 1e-12
        grad = np.array([(g * u).sum() + l2 * w, g.sum()])
        hess = np.array([[(h * u * u).sum() + l2, (h * u).sum()], [(h * u).sum(), h.sum()]])
        step = np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
        w, b = w - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    return Logistic(weight=float(w / scale), bias=float(b - w * mean / scale), feature=feature)


def fit_score(digit_logits: npt.ArrayLike, other_logits: npt.ArrayLike) -> Logistic:
    """The feature that best separates these validation sets (by AUROC), mapped to [0, 1]."""
    best = max(
        FEATURES,
        key=lambda name: auroc(FEATURES[name](digit_logits), FEATURES[name](other_logits)),
    )
    feature = FEATURES[best]
    return fit_logistic(feature(digit_logits), feature(other_logits), feature=best)


def auroc(negatives: npt.ArrayLike, positives: npt.ArrayLike) -> float:
    """P(a positive scores above a negative), ties counting half: the Mann-Whitney statistic."""
    neg = np.asarray(negatives, dtype=np.float64)
    pos = np.asarray(positives, dtype=np.float64)
    scores = np.concatenate([neg, pos])
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # Mid-ranks: ties share the average of the ranks they span.
    mid = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = mid[inverse]
    u = ranks[len(neg) :].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(neg) * len(pos)))


def fpr_at_tpr(negatives: npt.ArrayLike, positives: npt.ArrayLike, tpr: float = 0.95) -> float:
    """Share of negatives (digits) scoring at or above the score that catches `tpr` of positives."""
    cut = np.quantile(np.asarray(positives, dtype=np.float64), 1.0 - tpr)
    return float((np.asarray(negatives) >= cut).mean())


def threshold_for_rate(scores: npt.ArrayLike, flagged_rate: float) -> float:
    """The score above which at most `flagged_rate` of these (in-distribution) scores lie."""
    return float(
        np.quantile(np.asarray(scores, dtype=np.float64), 1.0 - flagged_rate, method="higher")
    )
