"""Measure models of the store with onnxruntime: the artifacts themselves, not PyTorch weights.

    python -m training.evaluate --model convnet [--version N] [--out reports]
    python -m training.evaluate --ood [--model M] [--version N] [--out reports]

The first prints accuracy, per-class accuracy and the confusion matrix, and writes PNGs of the
confusion matrix and of the 25 most confident mistakes. `--ood` measures the not-a-digit score of
every version (or the one named) against sets kept out of training, beside the max-softmax
baseline (handwriting-like non-digits included), and the accuracy and share flagged of digits in
other styles, and writes `ood.json` and `ood.png`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training import ood
from training.data import default_data_dir, load_split
from training.inference import FloatArray, run, session

log = logging.getLogger(__name__)


def confusion_matrix(labels: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64]) -> Any:
    matrix = np.zeros((10, 10), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def plot_confusion(matrix: Any, path: Path, title: str) -> None:
    import matplotlib  # noqa: PLC0415 - a training extra, loaded only to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the Agg backend

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    shown = np.log1p(matrix)
    ax.imshow(shown, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        color = "white" if shown[i, j] > shown.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_mistakes(
    images: npt.NDArray[np.uint8],
    labels: npt.NDArray[np.int64],
    probabilities: FloatArray,
    path: Path,
    title: str,
    count: int = 25,
) -> None:
    """The `count` mistakes the model was most sure of, with true label and prediction."""
    import matplotlib  # noqa: PLC0415 - a training extra, loaded only to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the Agg backend

    predicted = probabilities.argmax(1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:count]
    fig, axes = plt.subplots(5, 5, figsize=(7, 7.8))
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, worst, strict=False):
        ax.imshow(images[i], cmap="gray")
        ax.set_title(
            f"#{i} true {labels[i]}\npred {predicted[i]} ({probabilities[i, predicted[i]]:.0%})",
            fontsize=8,
        )
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latest_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()]
    if not versions:
        raise SystemExit(f"{model_dir}: no versions")
    return max(versions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__)
    parser.add_argument("--model", choices=["convnet", "mlp"])
    parser.add_argument("--version", type=int, help="default: the newest in the store")
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--fashion-dir", type=Path, default=default_data_dir("fashion-mnist"))
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--ood", action="store_true", help="measure the not-a-digit score")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.ood:
        return ood_main(args)
    if args.model is None:
        parser.error("--model is required (or --ood)")

    model_dir = args.model_store / args.model
    version = args.version or latest_version(model_dir)
    manifest = json.loads((model_dir / str(version) / "manifest.json").read_text())
    test = load_split(args.data_dir or default_data_dir(), "test")
    probabilities = run(session(model_dir / str(version) / "model.onnx"), test.images)[
        "probabilities"
    ]
    predicted = probabilities.argmax(1)
    matrix = confusion_matrix(test.labels, predicted)
    acc = float((predicted == test.labels).mean())

    print(
        f"{args.model} v{version}: test accuracy {acc:.4%} "
        f"({int((predicted != test.labels).sum())} errors in {len(test)}); "
        f"manifest says {manifest['metrics']['test_accuracy']:.4%}"
    )
    print(
        "per class: " + "  ".join(f"{d}: {matrix[d, d] / matrix[d].sum():.2%}" for d in range(10))
    )
    print("confusion (rows true, columns predicted):")
    print("     " + " ".join(f"{d:>5}" for d in range(10)))
    for d in range(10):
        print(f"{d:>4} " + " ".join(f"{c:>5}" for c in matrix[d]))

    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.model}-v{version}"
    title = f"{args.model} v{version}: {acc:.2%} on MNIST test"
    plot_confusion(matrix, Path(f"{stem}-confusion.png"), title)
    plot_mistakes(
        test.images,
        test.labels,
        probabilities,
        Path(f"{stem}-mistakes.png"),
        f"{args.model} v{version}: the 25 most confident mistakes",
    )
    print(f"wrote {stem}-confusion.png and {stem}-mistakes.png")
    return 0


def ood_main(args: argparse.Namespace) -> int:
    test = load_split(args.data_dir or default_data_dir(), "test")
    sets = ood.ood_sets(test, args.fashion_dir)
    styles = ood.style_sets(test)
    models = [args.model] if args.model else ["convnet", "mlp"]
    results: dict[str, dict[str, Any]] = {}
    for name in models:
        model_dir = args.model_store / name
        versions = (
            [args.version]
            if args.version
            else sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
        )
        for version in versions:
            manifest = json.loads((model_dir / str(version) / "manifest.json").read_text())
            sess = session(model_dir / str(version) / "model.onnx")
            result = ood.figures(sess, manifest["not_digit_threshold"], test, sets, styles)
            result["score"] = manifest["metrics"]["not_digit"].get("score", "")
            results[f"{name} v{version}"] = result

    columns = list(sets)
    print("AUROC, MNIST test digits vs each set: trained not_digit / max-softmax baseline")
    print(f"{'model':<12} {'flagged':>8} {'ECE':>7}  " + " ".join(f"{c[:16]:>16}" for c in columns))
    for label, result in results.items():
        cells = [
            f"{result['sets'][c]['trained']['auroc']:.4f}/{result['sets'][c]['max_softmax']['auroc']:.4f}"
            for c in columns
        ]
        print(
            f"{label:<12} {result['mnist_test_flagged_rate']:>8.2%} "
            f"{result['ece_15_bins']:>7.2%}  " + " ".join(f"{c:>16}" for c in cells)
        )
    print("\nhandwriting-like non-digits: AUROC / FPR at 95% TPR / flagged at the threshold")
    for label, result in results.items():
        cells = [
            f"{name}: {f['trained']['auroc']:.4f}/{f['trained']['fpr_at_95_tpr']:.2%}/"
            f"{f['detected_at_threshold']:.1%}"
            for name, f in result["sets"].items()
            if name in ood.HANDWRITING
        ]
        print(f"{label:<12} " + "  ".join(cells))
    print("\ndigits in other styles: accuracy / wrongly flagged")
    for label, result in results.items():
        cells = [
            f"{name}: {f['accuracy']:.2%}/{f['flagged_at_threshold']:.2%}"
            for name, f in result["styles"].items()
        ]
        print(f"{label:<12} " + "  ".join(cells))
    args.out.mkdir(parents=True, exist_ok=True)
    report = {k: {kk: vv for kk, vv in v.items() if kk != "_scores"} for k, v in results.items()}
    (args.out / "ood.json").write_text(json.dumps(report, indent=2) + "\n")
    ood.plot(results, args.out / "ood.png")
    print(f"wrote {args.out / 'ood.json'} and {args.out / 'ood.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
