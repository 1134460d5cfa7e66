"""Train the served networks on MNIST and write them into the model store.

    python -m training --model convnet|mlp|all --out model_store [--epochs N] [--limit N]

Each run carves a validation split from the training set by a seeded shuffle, keeps the weights
of the best validation epoch, exports them to ONNX, measures the exported graph with onnxruntime
on the 10,000 test images, and writes `<out>/<model>/<version>/{model.onnx,manifest.json}`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training import data, evaluate
from training.config import DEFAULTS, TrainConfig
from training.export import build_manifest, export_onnx, write_manifest
from training.train import split_train_val, train

log = logging.getLogger("training")
# Share of real (validation) digits the not-a-digit verdict may flag.
NOT_DIGIT_FLAG_RATE = 0.01


def next_version(model_dir: Path) -> int:
    existing = [int(p.name) for p in model_dir.glob("*") if p.name.isdigit()]
    return max(existing, default=0) + 1


def not_digit_metrics(
    onnx_path: Path, val: data.Split, test: data.Split, fashion_dir: Path | None
) -> tuple[float, dict[str, Any]]:
    """Threshold flagging ≤1% of validation digits; test flag rate; AUROC against Fashion-MNIST."""
    sess = evaluate.session(onnx_path)
    threshold = evaluate.threshold_for_rate(
        evaluate.run(sess, val.images)["not_digit"], NOT_DIGIT_FLAG_RATE
    )
    digit_scores = evaluate.run(sess, test.images)["not_digit"]
    figures: dict[str, Any] = {
        "score": "1 - max probability",
        "mnist_test_flagged_rate": float((digit_scores > threshold).mean()),
    }
    if fashion_dir is not None and (fashion_dir / data.CHECKSUM_FILE).is_file():
        fashion = data.load_split(fashion_dir, "test")
        fashion_scores = evaluate.run(sess, fashion.images)["not_digit"]
        figures["fashion_mnist_test_auroc"] = evaluate.auroc(digit_scores, fashion_scores)
        figures["fashion_mnist_test_detected_rate"] = float((fashion_scores > threshold).mean())
    return threshold, figures


def run_one(cfg: TrainConfig, args: argparse.Namespace, data_dir: Path) -> Path:
    train_full = data.load_split(data_dir, "train")
    test = data.load_split(data_dir, "test")
    train_split, val_split = split_train_val(train_full, cfg.val_size, cfg.seed)
    log.info(
        "%s: %d training, %d validation images; %s",
        cfg.model,
        len(train_split),
        len(val_split),
        cfg,
    )

    result = train(cfg, train_split, val_split, checkpoint_dir=args.checkpoints)

    model_dir = args.out / cfg.model
    version = args.version or next_version(model_dir)
    target: Path = model_dir / str(version)
    onnx_path = target / "model.onnx"
    export_onnx(result.model, onnx_path)

    probabilities = evaluate.run(evaluate.session(onnx_path), test.images)["probabilities"]
    test_accuracy = float((probabilities.argmax(1) == test.labels).mean())
    threshold, nd_figures = not_digit_metrics(onnx_path, val_split, test, args.fashion_dir)
    manifest = build_manifest(
        name=cfg.model,
        version=version,
        model=result.model,
        onnx_path=onnx_path,
        metrics={
            "test_accuracy": test_accuracy,
            "test_images": len(test),
            "val_accuracy": result.best_val_accuracy,
            "not_digit": nd_figures,
        },
        not_digit_threshold=threshold,
        training={
            "data": {"dir_name": data_dir.name, "sha256": data.dataset_checksums(data_dir)},
            "seed": cfg.seed,
            "epochs": result.epochs_run,
            "best_epoch": result.best_epoch,
            "train_images": len(train_split) if cfg.limit is None else cfg.limit,
            "val_images": len(val_split),
            "batch_size": cfg.batch_size,
            "optimizer": f"AdamW lr={cfg.lr} weight_decay={cfg.weight_decay}, OneCycle",
            "augmentation": asdict(cfg.augment) if cfg.augment else None,
            "seconds_per_epoch": round(result.seconds_per_epoch, 1),
            "torch_threads": torch.get_num_threads(),
            "device": "cpu",
        },
    )
    write_manifest(target / "manifest.json", manifest)
    log.info(
        "%s v%d: test accuracy %.4f, not_digit threshold %.4f → %s",
        cfg.model,
        version,
        test_accuracy,
        threshold,
        target,
    )
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", choices=[*DEFAULTS, "all"], default="all")
    parser.add_argument("--out", type=Path, default=Path("model_store"))
    parser.add_argument("--version", type=int, help="default: one above the newest in --out")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="MNIST gzipped IDX files + SHA256SUMS (env DIGITS_DATA_DIR; "
        "default ../shared/datasets/mnist)",
    )
    parser.add_argument(
        "--fashion-dir",
        type=Path,
        default=data.default_data_dir("fashion-mnist"),
        help="Fashion-MNIST, for the not-a-digit figures (skipped if absent)",
    )
    parser.add_argument(
        "--download",
        metavar="BASE_URL",
        help="fetch the MNIST files from this URL into --data-dir first, "
        "checking each against the known SHA256",
    )
    parser.add_argument(
        "--checkpoints",
        type=Path,
        default=Path("checkpoints"),
        help="best weights so far are kept here during training",
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--limit", type=int, help="train on this many images (smoke runs)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
    )
    logging.getLogger("training").setLevel(logging.INFO)

    data_dir = args.data_dir or data.default_data_dir()
    if args.download:
        data.download(args.download, data_dir, data.MNIST_SHA256)
    names = list(DEFAULTS) if args.model == "all" else [args.model]
    for name in names:
        cfg = DEFAULTS[name].with_overrides(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            limit=args.limit,
            threads=args.threads,
        )
        run_one(cfg, args, data_dir)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    np.set_printoptions(precision=4)
    raise SystemExit(main())
