"""Training settings as plain values: one dataclass, one default per model."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Jitter:
    """Random affine augmentation, drawn per image: each value is the largest excursion."""

    rotation_deg: float
    scale: float  # relative: 0.1 means 0.9x to 1.1x
    shear: float
    shift_px: float
    # Elastic distortion (Simard et al., 2003): a random displacement field smoothed by a
    # Gaussian of `elastic_sigma` px, scaled by up to `elastic_alpha` px; 0 turns it off.
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0


@dataclass(frozen=True)
class TrainConfig:
    model: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    augment: Jitter | None
    seed: int = 20261123
    # Carved from the 60,000 training images by a seeded shuffle; the test set stays untouched.
    val_size: int = 5000
    # Train on only this many training images (smoke runs); None means all of them.
    limit: int | None = None
    threads: int | None = None
    # Outlier exposure: weight of the "not a digit → uniform" loss (0 turns it off), and the
    # size of each step's outlier batch relative to its digit batch.
    outlier_weight: float = 0.5
    outlier_fraction: float = 0.5
    # Share of each digit batch replaced by digits in other styles (typed, low-resolution,
    # blurred, thick, thin), labelled with their digit, so the verdict learns to accept them.
    style_fraction: float = 0.15
    # Knowledge distillation (Hinton et al., 2015): with `teacher`, a model name, the newest
    # version of that model in the output store scores every training digit, and the loss adds
    # `distill_weight` x the KL divergence to its probabilities at `distill_temperature`.
    teacher: str | None = None
    distill_weight: float = 0.0
    distill_temperature: float = 4.0
    # Start from these weights (a checkpoint written by an earlier run) instead of at random.
    init_from: str | None = None
    # Polyak averaging: validation, the checkpoint and the export use an exponential moving
    # average of the weights (and batch-norm statistics) with this decay per step; 0 turns it off.
    ema_decay: float = 0.999

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


DEFAULTS: dict[str, TrainConfig] = {
    # From scratch: affine jitter and elastic distortion on every digit, outlier exposure and
    # digits in other styles in every step. 55-140 s per epoch on 2 shared CPU cores.
    "convnet": TrainConfig(
        model="convnet",
        epochs=20,
        batch_size=128,
        lr=3e-3,
        weight_decay=5e-4,
        augment=Jitter(rotation_deg=10, scale=0.1, shear=0.12, shift_px=2.0, elastic_alpha=34),
    ),
    # A few seconds per epoch. Without augmentation the 16 sigmoid units overfit (95.7% at
    # best in our runs); a lighter jitter than the convnet's regularises without drowning them.
    "mlp": TrainConfig(
        model="mlp",
        epochs=200,
        batch_size=64,
        lr=3e-3,
        weight_decay=0.01,
        augment=Jitter(rotation_deg=6, scale=0.05, shear=0.0, shift_px=1.0, elastic_alpha=0),
        # 16 units have little to spare: at 0.5 the digits lost half a point of accuracy, and
        # with the handwriting-like outliers at 0.25 and 10% other styles, 0.7 (95.76%). The
        # score leans on the input pixels instead (training/score.py).
        outlier_weight=0.05,
        style_fraction=0.05,
        teacher="convnet",
        # Distilled from convnet v2 (weight 0.5, temperature 4), v3 reached 95.75%; v4, without a
        # teacher, 96.29%. `--distill-weight 0.5` turns distillation back on.
        distill_weight=0.0,
    ),
}
