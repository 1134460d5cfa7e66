"""One training loop: seeded split, augmentation, OneCycle AdamW, best checkpoint by validation."""

from __future__ import annotations

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


def augment(x: torch.Tensor, gen: torch.Generator, jitter: Jitter) -> torch.Tensor:
    """A random affine transform per image (rotation, scale, shear, shift), zeros outside."""
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
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


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
) -> Result:
    """Train `cfg.model`; returns the weights of the best validation epoch.

    With `outliers` (images that are not digits) and `cfg.outlier_weight` > 0, each step also
    shows the network a batch of them and pulls its output towards the uniform distribution:
    outlier exposure (Hendrycks et al., 2019), which makes "none of the ten" learnable.
    """
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    gen = torch.Generator().manual_seed(cfg.seed)

    if cfg.limit is not None:
        train_split = Split(train_split.images[: cfg.limit], train_split.labels[: cfg.limit])
    x_train, y_train = to_tensor(train_split.images), torch.from_numpy(train_split.labels)
    x_val, y_val = to_tensor(val_split.images), torch.from_numpy(val_split.labels)
    use_outliers = outliers is not None and len(outliers) > 0 and cfg.outlier_weight > 0
    x_out = to_tensor(outliers) if use_outliers and outliers is not None else None
    out_batch = max(1, int(cfg.batch_size * cfg.outlier_fraction))

    model = build(cfg.model)
    if cfg.init_from:
        model.load_state_dict(torch.load(cfg.init_from, weights_only=True)["state_dict"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch
    )

    best_acc, best_epoch, best_state = -1.0, 0, model.state_dict()
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
            if cfg.augment is not None:
                x = augment(x, gen, cfg.augment)
            if x_out is None:
                loss = F.cross_entropy(model(x), y)
            else:
                pick = torch.randint(0, len(x_out), (out_batch,), generator=gen)
                logits = model(torch.cat([x, x_out[pick]]))
                digits, others = logits[: len(idx)], logits[len(idx) :]
                # Cross-entropy to the uniform distribution over the ten digits.
                uniform = -F.log_softmax(others, dim=1).mean(dim=1).mean()
                loss = F.cross_entropy(digits, y) + cfg.outlier_weight * uniform
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(idx)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        val_acc = accuracy(model, x_val, y_val)
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
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
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
