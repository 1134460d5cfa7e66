"""The not-a-digit score from more than the logits, computed inside the exported graph.

Features, each low for inputs like the training digits:
- `energy`: -logsumexp(logits) (Liu et al., 2020); `log_rest`: log(1 - max softmax).
- `maha_<layer>`: log of the Mahalanobis distance of a layer's activation to the nearest class
  mean, one covariance shared by the classes (Lee et al., 2018), fitted on training digits.
- `pca_residual`: log of what the input pixels keep outside the principal subspace of the
  training digits; `qda_input`: within that subspace, the distance to the nearest class under
  a Gaussian per class with its own covariance (-2 log density, constants dropped).
- `log_ink`: log of the mean pixel.

An image with less contrast than `EMPTY_CONTRAST` (the service's own test for a blank image)
scores 1: the mlp's fitted score called a black image a digit (0.0015; with `log_ink`, 0.31),
the other features of an empty input happening to sit among the digits'.

`not_digit = sigmoid(w . features + b)`, a logistic regression fitted on validation digits
(MNIST and digits in other styles) against validation non-digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from training.data import Split
from training.outliers import Pools

FloatArray = npt.NDArray[np.float64]
# Which features each network's score uses: the mlp's 16-unit layers say little by themselves,
# so its input pixels join in.
FEATURES = {
    "convnet": ("energy", "log_rest", "maha_fc1", "qda_input", "pca_residual"),
    "mlp": (
        "energy",
        "log_rest",
        "maha_hidden1",
        "maha_hidden2",
        "qda_input",
        "pca_residual",
        "log_ink",
    ),
}
# On mlp v3's first run, handwriting AUROC 0.933 without qda_input, 0.946 with it at 80
# components, 0.944 at 150 (a nearest-neighbour distance added nothing).
PCA_COMPONENTS = 80
EMPTY_CONTRAST = 0.1


@dataclass(frozen=True)
class Gaussian:
    """Class means [10,D] and a factor L of the shared precision (P = L L^T), [D,D]."""

    means: FloatArray
    factor: FloatArray


def fit_gaussian(x: FloatArray, labels: npt.NDArray[np.int64], ridge: float = 1e-3) -> Gaussian:
    means = np.stack([x[labels == c].mean(axis=0) for c in range(10)])
    centred = x - means[labels]
    cov = centred.T @ centred / len(x)
    cov += ridge * np.trace(cov) / len(cov) * np.eye(len(cov))
    return Gaussian(means, np.linalg.cholesky(np.linalg.inv(cov)))


@dataclass(frozen=True)
class Quadratic:
    """Per class: mean [10,k], a factor of its own precision [10,k,k], log-determinant [10]."""

    means: FloatArray
    factors: FloatArray
    logdets: FloatArray


def fit_quadratic(x: FloatArray, labels: npt.NDArray[np.int64], ridge: float = 1e-3) -> Quadratic:
    means, factors, logdets = [], [], []
    for c in range(10):
        members = x[labels == c]
        cov = np.cov((members - members.mean(axis=0)).T) + ridge * np.eye(x.shape[1])
        means.append(members.mean(axis=0))
        factors.append(np.linalg.cholesky(np.linalg.inv(cov)))
        logdets.append(np.linalg.slogdet(cov)[1])
    return Quadratic(np.stack(means), np.stack(factors), np.asarray(logdets))


@dataclass(frozen=True)
class Pca:
    mean: FloatArray
    basis: FloatArray  # [784, k], orthonormal columns


def fit_pca(pixels: FloatArray, k: int = PCA_COMPONENTS) -> Pca:
    mean = pixels.mean(axis=0)
    _, _, vt = np.linalg.svd(pixels - mean, full_matrices=False)
    return Pca(mean, vt[:k].T)


class LayerScore(nn.Module):
    """sigmoid(w . features + b) from the activations, the raw logits and the input."""

    def __init__(
        self,
        names: tuple[str, ...],
        gaussians: dict[str, Gaussian],
        pca: Pca | None,
        weights: FloatArray,
        bias: float,
        quadratic: Quadratic | None = None,
    ) -> None:
        super().__init__()
        self.names = names
        self.pca_mean: torch.Tensor
        self.pca_basis: torch.Tensor
        for layer, g in gaussians.items():
            self.register_buffer(f"means_{layer}", _f32(g.means @ g.factor))
            self.register_buffer(f"factor_{layer}", _f32(g.factor))
        if pca is not None:
            self.register_buffer("pca_mean", _f32(pca.mean))
            self.register_buffer("pca_basis", _f32(pca.basis))
        self.q_factors: torch.Tensor
        self.q_means: torch.Tensor
        self.q_logdets: torch.Tensor
        if quadratic is not None:
            k = quadratic.factors.shape[1]
            # [k, 10k]: one matmul projects onto every class's whitened coordinates at once.
            self.register_buffer(
                "q_factors", _f32(quadratic.factors.transpose(1, 0, 2).reshape(k, -1))
            )
            self.register_buffer(
                "q_means", _f32(np.einsum("ck,ckj->cj", quadratic.means, quadratic.factors))
            )
            self.register_buffer("q_logdets", _f32(quadratic.logdets))
        self.weights: torch.Tensor
        self.bias: torch.Tensor
        self.register_buffer("weights", _f32(weights))
        self.register_buffer("bias", _f32(np.asarray(bias)))

    def _maha(self, layer: str, x: torch.Tensor) -> torch.Tensor:
        factor: torch.Tensor = getattr(self, f"factor_{layer}")
        m: torch.Tensor = getattr(self, f"means_{layer}")
        z = x @ factor
        dist = (z * z).sum(1, keepdim=True) - 2 * z @ m.T + (m * m).sum(1)
        return torch.log(dist.min(dim=1).values.clamp_min(0) + 1.0)

    def features(
        self, image: torch.Tensor, acts: dict[str, torch.Tensor], raw: torch.Tensor
    ) -> torch.Tensor:
        columns = []
        for name in self.names:
            if name == "energy":
                columns.append(-torch.logsumexp(raw, dim=1))
            elif name == "log_rest":
                top = nn.functional.one_hot(raw.argmax(dim=1), raw.shape[1]).bool()
                rest = torch.logsumexp(raw.masked_fill(top, float("-inf")), dim=1)
                columns.append(rest - torch.logsumexp(raw, dim=1))
            elif name == "log_ink":
                columns.append(torch.log(image.flatten(1).mean(1) + 1e-3))
            elif name in ("qda_input", "pca_residual"):
                centred = image.flatten(1) - self.pca_mean
                coords = centred @ self.pca_basis
                if name == "qda_input":
                    z = (coords @ self.q_factors).reshape(
                        -1, 10, self.q_means.shape[1]
                    ) - self.q_means
                    columns.append(((z * z).sum(2) + self.q_logdets).min(dim=1).values)
                else:
                    rest = (centred * centred).sum(1) - (coords * coords).sum(1)
                    columns.append(torch.log(rest.clamp_min(0) + 1e-3))
            else:
                columns.append(self._maha(name.removeprefix("maha_"), acts[name[5:]]))
        return torch.stack(columns, dim=1)

    def forward(
        self, image: torch.Tensor, acts: dict[str, torch.Tensor], raw: torch.Tensor
    ) -> torch.Tensor:
        score = torch.sigmoid(self.features(image, acts, raw) @ self.weights + self.bias)
        # Less contrast than EMPTY_CONTRAST: nothing drawn, whatever the features make of it.
        pixels = image.flatten(1)
        empty = pixels.amax(dim=1) - pixels.amin(dim=1) < EMPTY_CONTRAST
        return torch.where(empty, torch.ones_like(score), score)


def _f32(a: npt.ArrayLike) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32).copy())


def fit_logistic(
    negatives: FloatArray, positives: FloatArray, l2: float = 1e-3
) -> tuple[FloatArray, float]:
    """Logistic regression on feature rows, both classes weighted equally, by Newton's method;
    returns weights and bias on the raw (unstandardised) features."""
    x = np.concatenate([negatives, positives])
    y = np.concatenate([np.zeros(len(negatives)), np.ones(len(positives))])
    sample = np.where(y == 1, 0.5 / len(positives), 0.5 / len(negatives))
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    u = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    theta = np.zeros(u.shape[1])
    penalty = l2 * np.eye(u.shape[1])
    penalty[-1, -1] = 0
    for _ in range(100):
        p = 1 / (1 + np.exp(-np.clip(u @ theta, -60, 60)))
        grad = u.T @ (sample * (p - y)) + penalty @ theta
        hess = (u * (sample * p * (1 - p))[:, None]).T @ u + penalty + 1e-9 * np.eye(len(theta))
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    weights = theta[:-1] / scale
    return weights, float(theta[-1] - (weights * mean).sum())


# ---- fitting ----------------------------------------------------------------------------------

# Training digits the Gaussians and the principal subspace are fitted on (of each pool).
FIT_DIGITS = 20_000
FIT_STYLES = 10_000


@torch.no_grad()
def _activations(
    model: nn.Module, images: npt.NDArray[np.uint8], keep: Sequence[str]
) -> dict[str, FloatArray]:
    """The layers named in `keep` ("input" for the pixels), in float64. Only those: the
    convnet's six convolutions over 30,000 images would take 10 GB."""
    model.eval()
    parts: dict[str, list[FloatArray]] = {name: [] for name in keep}
    for i in range(0, len(images), 1000):
        x = torch.from_numpy(images[i : i + 1000].astype(np.float32) / 255.0).unsqueeze(1)
        acts = model.layers(x)  # type: ignore[operator]
        acts["input"] = x.flatten(1)
        for name in keep:
            parts[name].append(acts[name].double().numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


@torch.no_grad()
def _features(scorer: LayerScore, model: nn.Module, images: npt.NDArray[np.uint8]) -> FloatArray:
    model.eval()
    rows = []
    for i in range(0, len(images), 1000):
        x = torch.from_numpy(images[i : i + 1000].astype(np.float32) / 255.0).unsqueeze(1)
        acts = model.layers(x)  # type: ignore[operator]
        rows.append(scorer.features(x, acts, acts["logits"]).double().numpy())
    return np.concatenate(rows)


def fit(
    model: nn.Module, name: str, train: Split, val: Split, pools: Pools
) -> tuple[LayerScore, dict[str, Any]]:
    """The scorer for `model` and what the manifest records of it."""
    names = FEATURES[name]
    digits = train.images[:FIT_DIGITS]
    labels = train.labels[:FIT_DIGITS]
    if pools.styles_train is not None:
        digits = np.concatenate([digits, pools.styles_train.images[:FIT_STYLES]])
        labels = np.concatenate([labels, pools.styles_train.labels[:FIT_STYLES]])
    uses_pixels = any(n in names for n in ("qda_input", "pca_residual"))
    layers = [n.removeprefix("maha_") for n in names if n.startswith("maha_")]
    acts = _activations(model, digits, layers + (["input"] if uses_pixels else []))
    pca = fit_pca(acts["input"][:FIT_DIGITS]) if uses_pixels else None
    quadratic = None
    if pca is not None and "qda_input" in names:
        quadratic = fit_quadratic((acts["input"] - pca.mean) @ pca.basis, labels)
    gaussians = {layer: fit_gaussian(acts[layer], labels) for layer in layers}
    scorer = LayerScore(names, gaussians, pca, np.zeros(len(names)), 0.0, quadratic)

    negatives = [val.images] + ([pools.styles_val.images] if pools.styles_val is not None else [])
    digit_rows = _features(scorer, model, np.concatenate(negatives))
    other_rows = _features(scorer, model, pools.val)
    weights, bias = fit_logistic(digit_rows, other_rows)
    scorer = LayerScore(names, gaussians, pca, weights, bias, quadratic)
    return scorer, {
        "features": list(names),
        "weights": [float(w) for w in weights],
        "bias": bias,
        "gaussians_fitted_on": len(digits),
        "pca_components": PCA_COMPONENTS if pca is not None else None,
    }
