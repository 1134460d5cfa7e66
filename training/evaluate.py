"""Measure a model of the store with onnxruntime: the artifact itself, not the PyTorch weights.

    python -m training.evaluate --model convnet [--version N] [--out reports]

prints accuracy, per-class accuracy and the confusion matrix, and writes PNGs of the confusion
matrix and of the 25 most confident mistakes.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from training.data import default_data_dir, load_split

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float32]


def session(onnx_path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def to_input(images: npt.NDArray[np.uint8]) -> FloatArray:
    return (images.astype(np.float32) / 255.0)[:, None, :, :]


def run(
    sess: ort.InferenceSession,
    images: npt.NDArray[np.uint8],
    outputs: tuple[str, ...] = ("probabilities", "not_digit"),
    batch: int = 1000,
) -> dict[str, FloatArray]:
    """Run the graph over uint8 images in batches; returns the named outputs, concatenated."""
    parts: dict[str, list[FloatArray]] = {name: [] for name in outputs}
    for i in range(0, len(images), batch):
        got = sess.run(list(outputs), {"image": to_input(images[i : i + batch])})
        for name, value in zip(outputs, got, strict=True):
            parts[name].append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


def confusion_matrix(labels: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64]) -> Any:
    matrix = np.zeros((10, 10), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def auroc(negatives: FloatArray, positives: FloatArray) -> float:
    """Probability that a positive scores above a negative (ties count half): Mann-Whitney U."""
    scores = np.concatenate([negatives, positives]).astype(np.float64)
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    # Average the ranks of tied scores.
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    n_neg, n_pos = len(negatives), len(positives)
    u = ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_neg * n_pos))


def threshold_for_rate(scores: FloatArray, flagged_rate: float) -> float:
    """The score above which at most `flagged_rate` of these (in-distribution) scores lie."""
    return float(np.quantile(scores.astype(np.float64), 1.0 - flagged_rate, method="higher"))


def plot_confusion(matrix: Any, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    parser.add_argument("--model", required=True, choices=["convnet", "mlp"])
    parser.add_argument("--version", type=int, help="default: the newest in the store")
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

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


if __name__ == "__main__":
    raise SystemExit(main())
