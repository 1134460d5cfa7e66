"""One training loop: seeded split, augmentation, OneCycle AdamW, a moving average of the
weights, best checkpoint by validation."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from tqdm import tqdm

from training.config import Jitter, TrainConfig
from training.data import Split
from training.models import MLP, ConvNet, build

log = logging.getLogger(__name__)


@dataclass
class Result:
    model: ConvNet | MLP
    best_epoch: int
    best_val_accuracy: float
    epochs_run: int
    seconds_per_epoch: float
    history: list[dict[str, float]]


def to_tensor(images: npt.NDArray[np.uint8]) -> torch.Tensor:
    """uint8 [N,28,28] → float32 [N,1,28,28] in [0,1], the service's input format."""
    return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)


def split_train_val(train: Split, val_size: int, seed: int) -> tuple[Split, Split]:
    order = np.random.default_rng(seed).permutation(len(train))
    val_idx, train_idx = order[:val_size], order[val_size:]
    return (
        Split(train.images[train_idx], train.labels[train_idx]),
        Split(train.images[val_idx], train.labels[val_idx]),
    )


def elastic_field(n: int, gen: torch.Generator, jitter: Jitter, side: int = 28) -> torch.Tensor:
    """Smoothed random displacements [n,side,side,2] in affine_grid's [-1,1] units."""
    sigma = jitter.elastic_sigma
    radius = int(3 * sigma)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1) / sigma) ** 2)
    taps = taps / taps.sum()
    field = 2 * torch.rand(n * 2, 1, side, side, generator=gen) - 1
    field = F.conv2d(F.pad(field, (radius, radius, 0, 0), mode="reflect"), taps.view(1, 1, 1, -1))
    field = F.conv2d(F.pad(field, (0, 0, radius, radius), mode="reflect"), taps.view(1, 1, -1, 1))
    alpha = jitter.elastic_alpha * torch.rand(n, 1, 1, 1, generator=gen)
    return (field.view(n, 2, side, side) * alpha * (2 / side)).permute(0, 2, 3, 1)


def augment(x: torch.Tensor, gen: torch.Generator, jitter: Jitter) -> torch.Tensor:
    """A random affine transform per image (rotation, scale, shear, shift) and, with
    `elastic_alpha`, an elastic distortion, in one resampling; zeros outside."""
    n = x.shape[0]

    def uniform(limit: float) -> torch.Tensor:
        return limit * (2 * torch.rand(n, generator=gen) - 1)

    angle = uniform(jitter.rotation_deg) * math.pi / 180
    scale = 1 + uniform(jitter.scale)
    shear = uniform(jitter.shear)
    # affine_grid works in [-1, 1] coordinates: 14 pixels per unit on a 28-pixel side.
    tx, ty = uniform(jitter.shift_px / 14), uniform(jitter.shift_px / 14)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin + shear * cos, tx], dim=1),
            torch.stack([sin, cos + shear * sin, ty], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if jitter.elastic_alpha > 0:
        grid = grid + elastic_field(n, gen, jitter, x.shape[-1])
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


class MovingAverage:
    """An exponential moving average of a model's weights and batch-norm statistics (Polyak
    averaging). The decay warms up as min(decay, (1 + t) / (10 + t)) at step t, so that a short
    run averages over its own steps instead of keeping its random start."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        self.decay, self.steps = decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        keep = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for mine, theirs in zip(
            self.module.state_dict().values(), model.state_dict().values(), strict=True
        ):
            if mine.is_floating_point():
                mine.lerp_(theirs, 1 - keep)
            else:  # batch norm's step counter
                mine.copy_(theirs)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    return correct / max(1, len(x))


def train(
    cfg: TrainConfig,
    train_split: Split,
    val_split: Split,
    checkpoint_dir: Path | None = None,
    outliers: npt.NDArray[np.uint8] | None = None,
    styles: Split | None = None,
    teacher_logits: npt.NDArray[np.float32] | None = None,
) -> Result:
    """Train `cfg.model`; returns the weights of the best validation epoch.

    With `outliers` (images that are not digits) and `cfg.outlier_weight` > 0, each step also
    shows the network a batch of them and pulls its output towards the uniform distribution:
    outlier exposure (Hendrycks et al., 2019), which makes "none of the ten" learnable.
    With `styles` (digits in other styles, labelled), `cfg.style_fraction` of each digit batch
    is drawn from them instead, so unusual real digits stay digits. With `teacher_logits`
    (one row per training digit), the digits' loss also pulls towards the teacher's softened
    probabilities.
    """
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    gen = torch.Generator().manual_seed(cfg.seed)

    if cfg.limit is not None:
        train_split = Split(train_split.images[: cfg.limit], train_split.labels[: cfg.limit])
    x_train, y_train = to_tensor(train_split.images), torch.from_numpy(train_split.labels)
    soft = None
    if teacher_logits is not None and cfg.distill_weight > 0:
        t = torch.from_numpy(teacher_logits[: len(x_train)])
        soft = torch.softmax(t / cfg.distill_temperature, dim=1)
    x_val, y_val = to_tensor(val_split.images), torch.from_numpy(val_split.labels)
    use_outliers = outliers is not None and len(outliers) > 0 and cfg.outlier_weight > 0
    x_out = to_tensor(outliers) if use_outliers and outliers is not None else None
    out_batch = max(1, int(cfg.batch_size * cfg.outlier_fraction))
    use_styles = styles is not None and len(styles) > 0 and cfg.style_fraction > 0
    x_style = to_tensor(styles.images) if use_styles and styles is not None else None
    y_style = torch.from_numpy(styles.labels) if use_styles and styles is not None else None
    style_batch = int(cfg.batch_size * cfg.style_fraction)

    model = build(cfg.model)
    if cfg.init_from:
        model.load_state_dict(torch.load(cfg.init_from, weights_only=True)["state_dict"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch
    )

    # The average is what gets validated and kept; the raw weights only train.
    average = MovingAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    kept = average.module if average is not None else model
    best_acc, best_epoch, best_state = -1.0, 0, kept.state_dict()
    history: list[dict[str, float]] = []
    started = time.monotonic()
    for epoch in range(1, cfg.epochs + 1):
        epoch_start = time.monotonic()
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        total_loss = 0.0
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"{cfg.model} {epoch}/{cfg.epochs}",
            leave=False,
            disable=None,
        )
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x, y = x_train[idx], y_train[idx]
            target = soft[idx] if soft is not None else None
            if x_style is not None and y_style is not None and style_batch > 0:
                pick = torch.randint(0, len(x_style), (min(style_batch, len(idx)),), generator=gen)
                x, y = x.clone(), y.clone()
                x[: len(pick)], y[: len(pick)] = x_style[pick], y_style[pick]
                if target is not None:  # the teacher never saw these: their own label
                    target = target.clone()
                    target[: len(pick)] = F.one_hot(y[: len(pick)], 10).float()
            if x_out is not None:
                pick = torch.randint(0, len(x_out), (out_batch,), generator=gen)
                x = torch.cat([x, x_out[pick]])
            if cfg.augment is not None:
                x = augment(x, gen, cfg.augment)
            logits = model(x)
            digits, others = logits[: len(idx)], logits[len(idx) :]
            loss = F.cross_entropy(digits, y)
            if target is not None:
                temp = cfg.distill_temperature
                kl = F.kl_div(F.log_softmax(digits / temp, dim=1), target, reduction="batchmean")
                loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * temp**2 * kl
            if x_out is not None:
                # Cross-entropy to the uniform distribution over the ten digits.
                uniform = -F.log_softmax(others, dim=1).mean(dim=1).mean()
                loss = loss + cfg.outlier_weight * uniform
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            scheduler.step()
            if average is not None:
                average.update(model)
            total_loss += loss.item() * len(idx)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        val_acc = accuracy(kept, x_val, y_val)
        seconds = time.monotonic() - epoch_start
        record = {
            "epoch": epoch,
            "train_loss": total_loss / len(x_train),
            "val_accuracy": val_acc,
            "seconds": seconds,
        }
        history.append(record)
        improved = val_acc > best_acc
        if improved:
            best_acc, best_epoch = val_acc, epoch
            best_state = {k: v.detach().clone() for k, v in kept.state_dict().items()}
        log.info(
            "%s epoch %d/%d  loss %.4f  val_acc %.4f%s  %.1fs",
            cfg.model,
            epoch,
            cfg.epochs,
            record["train_loss"],
            val_acc,
            " (best)" if improved else "",
            seconds,
        )
        if checkpoint_dir is not None:
            save_checkpoint(
                checkpoint_dir / f"{cfg.model}.pt", cfg, best_state, best_epoch, best_acc, history
            )

    model.load_state_dict(best_state)
    model.eval()
    elapsed = time.monotonic() - started
    return Result(model, best_epoch, best_acc, cfg.epochs, elapsed / cfg.epochs, history)


def save_checkpoint(
    path: Path,
    cfg: TrainConfig,
    state: dict[str, Any],
    best_epoch: int,
    best_acc: float,
    history: list[dict[str, float]],
) -> None:
    """The best weights so far, written atomically so a killed run leaves a usable file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    payload = {
        "config": asdict(cfg),
        "state_dict": state,
        "best_epoch": best_epoch,
        "best_val_accuracy": best_acc,
        "history": history,
    }
    torch.save(payload, tmp)
    tmp.replace(path)


def resume(path: Path) -> Result:
    """The best weights of a checkpoint written by `train`, as if its run had ended there: for
    a run cut short, or to refit and export again."""
    payload = torch.load(path, weights_only=True)
    model = build(payload["config"]["model"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    history = payload["history"]
    seconds = sum(h["seconds"] for h in history) / max(1, len(history))
    return Result(
        model, payload["best_epoch"], payload["best_val_accuracy"], len(history), seconds, history
    )
