"""Train the served networks on MNIST and write them into the model store.

    python -m training --model convnet|mlp|all --out model_store [--epochs N] [--limit N]

Each run carves a validation split from the training set by a seeded shuffle, trains with
outlier exposure (Fashion-MNIST's training split and generated non-digits), keeps the weights of
the best validation epoch, fits the temperature and the not-a-digit score on validation data,
exports the graph to ONNX, measures the exported graph with onnxruntime on the 10,000 test
images and the out-of-distribution sets, and writes
`<out>/<model>/<version>/{model.onnx,manifest.json}`.
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
import numpy.typing as npt
import torch

from service.store.manifest import sha256_file
from training import calibrate, data, inference, ood, outliers, score
from training.config import DEFAULTS, TrainConfig
from training.export import build_manifest, export_onnx
from training.train import resume, split_train_val, to_tensor, train

log = logging.getLogger("training")
# Share of validation digits the verdict may flag: below 1%, so test digits stay under 1% too.
NOT_DIGIT_FLAG_RATE = 0.008


def next_version(model_dir: Path) -> int:
    existing = [int(p.name) for p in model_dir.glob("*") if p.name.isdigit()]
    return max(existing, default=0) + 1


def logits_of(model: torch.nn.Module, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    model.eval()
    with torch.no_grad():
        x = to_tensor(images)
        return torch.cat([model(x[i : i + 1000]) for i in range(0, len(x), 1000)]).numpy()


def run_one(cfg: TrainConfig, args: argparse.Namespace, data_dir: Path) -> Path:
    train_full = data.load_split(data_dir, "train")
    test = data.load_split(data_dir, "test")
    train_split, val_split = split_train_val(train_full, cfg.val_size, cfg.seed)
    # A smoke run (--limit) uses that many training digits throughout (the teacher's logits,
    # the score's Gaussians) and draws generated outliers in proportion.
    scale = min(1.0, cfg.limit / len(train_split)) if cfg.limit else 1.0
    if cfg.limit is not None:
        train_split = data.Split(train_split.images[: cfg.limit], train_split.labels[: cfg.limit])
    pools = None
    if cfg.outlier_weight > 0:
        pools = outliers.training_pools(args.fashion_dir, train_split, val_split, cfg.seed, scale)
    log.info(
        "%s: %d training, %d validation images, %d outliers; %s",
        cfg.model,
        len(train_split),
        len(val_split),
        len(pools.train) if pools else 0,
        cfg,
    )

    teacher, teacher_logits = None, None
    if cfg.teacher and cfg.distill_weight > 0 and (args.out / cfg.teacher).is_dir():
        teacher = args.out / cfg.teacher / str(next_version(args.out / cfg.teacher) - 1)
        if not args.from_checkpoint:
            teacher_sess = inference.session(teacher / "model.onnx")
            teacher_logits = inference.run(teacher_sess, train_split.images, ("logits",))["logits"]
            log.info("%s: distilling from %s", cfg.model, teacher)
    if args.from_checkpoint:
        result = resume(args.from_checkpoint)
        log.info("%s: best of %d epochs in %s", cfg.model, result.epochs_run, args.from_checkpoint)
    else:
        result = train(
            cfg,
            train_split,
            val_split,
            args.checkpoints,
            pools.train if pools else None,
            pools.styles_train if pools else None,
            teacher_logits,
        )

    # The temperature on validation digits; the not-a-digit score's Gaussians on training
    # digits, its weights on validation digits (both styles) against validation non-digits.
    val_logits = logits_of(result.model, val_split.images)
    temperature = calibrate.fit_temperature(val_logits, val_split.labels)
    scorer, fitted = None, dict[str, Any]()
    if pools is not None:
        scorer, fitted = score.fit(result.model, cfg.model, train_split, val_split, pools)

    model_dir = args.out / cfg.model
    version = args.version or next_version(model_dir)
    target: Path = model_dir / str(version)
    onnx_path = target / "model.onnx"
    export_onnx(result.model, onnx_path, temperature, scorer=scorer)

    sess = inference.session(onnx_path)
    threshold = calibrate.threshold_for_rate(
        inference.run(sess, val_split.images)["not_digit"], NOT_DIGIT_FLAG_RATE
    )
    on_test = inference.run(sess, test.images, ("probabilities", "logits"))
    uncalibrated = np.exp(calibrate.log_softmax(on_test["logits"] * temperature))
    not_digit: dict[str, Any] = {
        "score": f"sigmoid(w . [{', '.join(fitted['features'])}] + b) after outlier exposure"
        if scorer
        else "1 - max probability",
        **fitted,
    }
    if (args.fashion_dir / data.CHECKSUM_FILE).is_file():
        sets = ood.ood_sets(test, args.fashion_dir, per_kind=args.ood_per_kind)
        styles = ood.style_sets(test, per_kind=args.ood_per_kind)
        not_digit.update(ood.headline(ood.figures(sess, threshold, test, sets, styles)))
    manifest = build_manifest(
        name=cfg.model,
        version=version,
        model=result.model,
        onnx_path=onnx_path,
        metrics={
            "test_accuracy": float((on_test["probabilities"].argmax(1) == test.labels).mean()),
            "test_images": len(test),
            "val_accuracy": result.best_val_accuracy,
            "temperature": temperature,
            "ece_15_bins": calibrate.expected_calibration_error(
                on_test["probabilities"], test.labels
            ),
            "ece_15_bins_uncalibrated": calibrate.expected_calibration_error(
                uncalibrated, test.labels
            ),
            "not_digit": not_digit,
        },
        not_digit_threshold=threshold,
        training={
            "data": {"dir_name": data_dir.name, "sha256": data.dataset_checksums(data_dir)},
            "outliers": pools.description if pools else None,
            "seed": cfg.seed,
            "epochs": result.epochs_run,
            "from_checkpoint": args.from_checkpoint is not None,
            "best_epoch": result.best_epoch,
            "train_images": len(train_split),
            "val_images": len(val_split),
            "batch_size": cfg.batch_size,
            "optimizer": f"AdamW lr={cfg.lr} weight_decay={cfg.weight_decay}, OneCycle",
            "augmentation": asdict(cfg.augment) if cfg.augment else None,
            "outlier_weight": cfg.outlier_weight,
            "style_fraction": cfg.style_fraction,
            "teacher": teacher
            and {
                "model": f"{teacher.parent.name} v{teacher.name}",
                "onnx_sha256": sha256_file(teacher / "model.onnx"),
                "distill_weight": cfg.distill_weight,
                "distill_temperature": cfg.distill_temperature,
            },
            "init_from": cfg.init_from
            and {
                "checkpoint": Path(cfg.init_from).name,
                "sha256": sha256_file(Path(cfg.init_from)),
            },
            "seconds_per_epoch": round(result.seconds_per_epoch, 1),
            "history": result.history,
            "torch_threads": torch.get_num_threads(),
            "device": "cpu",
        },
    )
    manifest.write(target / "manifest.json")
    log.info(
        "%s v%d: test accuracy %.4f, temperature %.3f, not_digit threshold %.4f -> %s",
        cfg.model,
        version,
        manifest.metrics.test_accuracy,
        temperature,
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
        help="Fashion-MNIST: its training split is used as outliers, its test split only "
        "for the not-a-digit figures",
    )
    parser.add_argument(
        "--ood-per-kind",
        type=int,
        default=ood.EVAL_PER_KIND,
        help="generated images per kind for the not-a-digit figures",
    )
    parser.add_argument("--init-from", help="a checkpoint to start from (fine-tuning)")
    parser.add_argument(
        "--outlier-weight",
        type=float,
        help="outlier-exposure loss weight; 0 trains without outliers",
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
    parser.add_argument(
        "--from-checkpoint",
        type=Path,
        help="skip training: fit the score, export and measure the best weights of this "
        "checkpoint (a run cut short; its config must match the other flags)",
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument(
        "--style-fraction", type=float, help="share of each digit batch in other styles"
    )
    parser.add_argument(
        "--distill-weight", type=float, help="weight of the teacher's loss; 0 trains without one"
    )
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
            outlier_weight=args.outlier_weight,
            weight_decay=args.weight_decay,
            style_fraction=args.style_fraction,
            distill_weight=args.distill_weight,
            init_from=args.init_from,
        )
        run_one(cfg, args, data_dir)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    np.set_printoptions(precision=4)
    raise SystemExit(main())
