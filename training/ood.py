"""How well a model tells digits from what is not a digit, measured on sets kept out of training.

For each out-of-distribution set: AUROC and the false-positive rate at 95% true-positive rate of
MNIST test digits against it, for the model's `not_digit` output and, side by side, for the
max-softmax baseline (1 - max probability; Hendrycks & Gimpel, 2017) of the same graph. Also the
share of MNIST test digits flagged at the manifest's threshold, and the calibration error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from training import calibrate, data, handwriting, inference, outliers

# Generated evaluation sets use their own seed: no image in them was seen in training.
EVAL_SEED = 9_000_001
EVAL_PER_KIND = 2000
HEADLINE = ("fashion_mnist_test", "gaussian_noise", "uniform_noise", "blank")


def ood_sets(
    mnist_test: data.Split, fashion_dir: Path, per_kind: int = EVAL_PER_KIND
) -> dict[str, npt.NDArray[np.uint8]]:
    """Fashion-MNIST test (never trained on), then every generated kind from the eval seed."""
    sets = {"fashion_mnist_test": data.load_split(fashion_dir, "test").images}
    kinds = {**outliers.TRAIN_KINDS, **outliers.HELD_OUT_KINDS}
    sets.update(outliers.generate(kinds, per_kind, mnist_test.images, EVAL_SEED))
    sets.update(handwriting.generate(HANDWRITING, per_kind, mnist_test, EVAL_SEED))
    return sets


# Non-digits that look like handwriting (the last never trained on) and digits in other styles.
HANDWRITING = {**handwriting.NON_DIGIT_KINDS, **handwriting.UNSEEN_NON_DIGIT_KINDS}


def style_sets(mnist_test: data.Split, per_kind: int = EVAL_PER_KIND) -> dict[str, data.Split]:
    """Digits in other styles from the eval seed, test digits and Pillow's own font only (the
    machine's fonts differ from one machine to the next; the figures must not)."""
    kinds = handwriting.style_kinds(system_fonts=False)
    return handwriting.generate_styles(kinds, per_kind, mnist_test, EVAL_SEED)


def figures(
    sess: ort.InferenceSession,
    threshold: float,
    mnist_test: data.Split,
    sets: dict[str, npt.NDArray[np.uint8]],
    styles: dict[str, data.Split] | None = None,
) -> dict[str, Any]:
    """Every figure for one graph; also returns the raw scores for plotting under `_scores`.
    For each digit-style set: accuracy and the share the verdict wrongly flags."""
    outputs = ("probabilities", "logits", "not_digit")
    digits = inference.run(sess, mnist_test.images, outputs)
    probabilities = digits["probabilities"]
    scores = {
        "trained": {"mnist_test": digits["not_digit"]},
        "max_softmax": {"mnist_test": 1.0 - probabilities.max(axis=1)},
    }
    per_set: dict[str, Any] = {}
    for name, images in sets.items():
        got = inference.run(sess, images, outputs)
        scores["trained"][name] = got["not_digit"]
        scores["max_softmax"][name] = 1.0 - got["probabilities"].max(axis=1)
        per_set[name] = {
            score: {
                "auroc": calibrate.auroc(values["mnist_test"], values[name]),
                "fpr_at_95_tpr": calibrate.fpr_at_tpr(values["mnist_test"], values[name]),
            }
            for score, values in scores.items()
        }
        per_set[name]["detected_at_threshold"] = float((got["not_digit"] > threshold).mean())
    per_style = {}
    for name, split in (styles or {}).items():
        got = inference.run(sess, split.images, outputs)
        per_style[name] = {
            "accuracy": float((got["probabilities"].argmax(1) == split.labels).mean()),
            "flagged_at_threshold": float((got["not_digit"] > threshold).mean()),
        }
    return {
        "mnist_test_flagged_rate": float((digits["not_digit"] > threshold).mean()),
        "test_accuracy": float((probabilities.argmax(1) == mnist_test.labels).mean()),
        "ece_15_bins": calibrate.expected_calibration_error(probabilities, mnist_test.labels),
        "sets": per_set,
        "styles": per_style,
        "_scores": scores,
    }


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The figures that go into the manifest: the chosen sets, trained score and baseline."""
    sets = result["sets"]
    held_out = [n for n in outliers.HELD_OUT_KINDS if n in sets]
    return {
        "mnist_test_flagged_rate": result["mnist_test_flagged_rate"],
        **{f"{name}_auroc": sets[name]["trained"]["auroc"] for name in HEADLINE if name in sets},
        **{
            f"{name}_auroc_max_softmax": sets[name]["max_softmax"]["auroc"]
            for name in HEADLINE
            if name in sets
        },
        "held_out_generated_auroc": float(np.mean([sets[n]["trained"]["auroc"] for n in held_out]))
        if held_out
        else None,
        **handwriting_headline(result),
    }


def handwriting_headline(result: dict[str, Any]) -> dict[str, Any]:
    """Per handwriting-like set: AUROC, FPR at 95% TPR, share flagged; per digit style:
    accuracy and share flagged. Only the sets measured (older manifests have none)."""
    sets, out = result["sets"], {}
    drawn = [n for n in HANDWRITING if n in sets]
    for name in drawn:
        out[f"{name}_auroc"] = sets[name]["trained"]["auroc"]
        out[f"{name}_fpr_at_95_tpr"] = sets[name]["trained"]["fpr_at_95_tpr"]
        out[f"{name}_flagged"] = sets[name]["detected_at_threshold"]
    if drawn:
        out["handwriting_auroc"] = float(np.mean([out[f"{n}_auroc"] for n in drawn]))
        out["handwriting_flagged"] = float(np.mean([out[f"{n}_flagged"] for n in drawn]))
    for name, figures in result.get("styles", {}).items():
        out[f"{name}_accuracy"] = figures["accuracy"]
        out[f"{name}_flagged"] = figures["flagged_at_threshold"]
    return out


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Score histograms (digits vs each headline set) and ROC curves, one row per model."""
    import matplotlib  # noqa: PLC0415 - a training extra, loaded only to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the Agg backend

    fig, axes = plt.subplots(len(results), 2, figsize=(12, 3.6 * len(results)), squeeze=False)
    bins = np.linspace(0, 1, 51)
    for row, (label, result) in enumerate(results.items()):
        trained = result["_scores"]["trained"]
        hist, roc = axes[row]
        hist.hist(
            trained["mnist_test"], bins=bins, alpha=0.6, label="MNIST test digits", density=True
        )
        for name in HEADLINE:
            if name in trained:
                hist.hist(trained[name], bins=bins, alpha=0.4, label=name, density=True)
        hist.set_yscale("log")
        hist.set_title(f"{label}: not_digit score")
        hist.legend(fontsize=7)
        for score, style in (("trained", "-"), ("max_softmax", ":")):
            values = result["_scores"][score]
            for name in HEADLINE:
                if name not in values:
                    continue
                cuts = np.quantile(
                    np.concatenate([values["mnist_test"], values[name]]), np.linspace(0, 1, 201)
                )
                tpr = [(values[name] >= c).mean() for c in cuts]
                fpr = [(values["mnist_test"] >= c).mean() for c in cuts]
                roc.plot(fpr, tpr, style, label=f"{name} ({score})")
        roc.set_xscale("symlog", linthresh=1e-3)
        roc.set_xlabel("digits flagged (false-positive rate)")
        roc.set_ylabel("non-digits caught (true-positive rate)")
        roc.set_title(f"{label}: ROC, trained (solid) vs max-softmax (dotted)")
        roc.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
