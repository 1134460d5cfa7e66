"""The training pipeline end to end on a small subset: train, export, check, parity with torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from training import data, score
from training.__main__ import main as train_main
from training.export import export_onnx
from training.models import MLP, ConvNet, Exported, count_parameters
from training.train import MovingAverage, to_tensor

CONTRACT_OUTPUTS = ["probabilities", "logits", "not_digit"]


def test_plain_convnet_geometry_has_628750_parameters() -> None:
    """Our convnet swaps each conv bias for batch norm; the plain geometry's count stays exact."""
    plain = (
        sum(
            c_in * c_out * 25 + c_out
            for c_in, c_out in zip((1, *ConvNet.channels[:-1]), ConvNet.channels, strict=True)
        )
        + (800 * 500 + 500)
        + (500 * 10 + 10)
    )
    assert plain == 628_750
    bias_free_with_bn = plain - sum(ConvNet.channels) + 2 * sum(ConvNet.channels)
    assert count_parameters(ConvNet()) == bias_free_with_bn == 628_990


def test_mlp_has_13002_parameters() -> None:
    assert count_parameters(MLP()) == 13_002


def test_convnet_layer_shapes_follow_28_24_20_16_12_8_4() -> None:
    acts = ConvNet().eval().layers(torch.zeros(3, 1, 28, 28))
    sides = [acts[f"conv{i}"].shape[-1] for i in range(1, 7)]
    assert sides == [24, 20, 16, 12, 8, 4]
    assert [acts[f"conv{i}"].shape[1] for i in range(1, 7)] == [20, 20, 50, 50, 50, 50]
    assert acts["fc1"].shape == (3, 500)
    assert acts["logits"].shape == (3, 10)


def test_the_moving_average_warms_up_then_trails_the_weights() -> None:
    model = ConvNet()
    average = MovingAverage(model, decay=0.999)
    start = model.fc2.weight.detach().clone()
    with torch.no_grad():
        model.fc2.weight.add_(1.0)
        model(torch.rand(4, 1, 28, 28))  # a training-mode step moves batch norm's statistics
    average.update(model)  # the first step keeps 2/11 of the start
    moved = average.module.fc2.weight - start
    assert torch.allclose(moved, torch.full_like(moved, 9 / 11))
    for _ in range(10_000):
        average.update(model)
    assert torch.allclose(average.module.fc2.weight, model.fc2.weight, atol=1e-3)
    bn_mine, bn_theirs = (
        next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
        for net in (average.module, model)
    )
    assert torch.allclose(bn_mine.running_mean, bn_theirs.running_mean, atol=1e-3)
    assert int(bn_mine.num_batches_tracked) == int(bn_theirs.num_batches_tracked) == 1


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """Both models trained for three short epochs on 1,500 images and exported, the mlp
    distilling from the convnet (off by default)."""
    out = tmp_path_factory.mktemp("store")
    argv = [
        "--model",
        "all",
        "--epochs",
        "3",
        "--limit",
        "1500",
        "--out",
        str(out),
        "--data-dir",
        str(mnist_dir),
        "--checkpoints",
        str(out / "checkpoints"),
        "--ood-per-kind",
        "100",
        "--distill-weight",
        "0.5",
    ]
    assert train_main(argv) == 0
    return out


@pytest.mark.parametrize("name", ["convnet", "mlp"])
def test_smoke_run_writes_a_valid_artifact(smoke_store: Path, name: str, mnist_dir: Path) -> None:
    version_dir = smoke_store / name / "1"
    onnx_model = onnx.load(str(version_dir / "model.onnx"))
    onnx.checker.check_model(onnx_model)
    assert onnx_model.opset_import[0].version >= 17

    manifest = json.loads((version_dir / "manifest.json").read_text())
    for key in (
        "name",
        "version",
        "architecture",
        "parameters",
        "inputs",
        "outputs",
        "metrics",
        "not_digit_threshold",
        "onnx_sha256",
        "training",
    ):
        assert key in manifest, key
    assert manifest["name"] == name and manifest["version"] == 1
    assert manifest["training"]["data"]["sha256"] == data.dataset_checksums(mnist_dir)
    assert [o["name"] for o in manifest["outputs"]][:3] == CONTRACT_OUTPUTS
    # Three short epochs on 1,500 images already beat chance (10%); the mlp, distilling from a
    # convnet as young and through outlier exposure, learns slowest (about 14%).
    assert manifest["metrics"]["test_accuracy"] > {"convnet": 0.2, "mlp": 0.12}[name]
    assert (smoke_store / "checkpoints" / f"{name}.pt").is_file()
    not_digit = manifest["metrics"]["not_digit"]
    assert "outlier exposure" in not_digit["score"]
    assert len(not_digit["weights"]) == len(not_digit["features"])
    for key in ("handwriting_auroc", "typed_digits_accuracy", "typed_digits_flagged"):
        assert 0.0 <= not_digit[key] <= 1.0, key
    if name == "mlp":  # trained after the convnet, so it distils from it
        assert manifest["training"]["teacher"]["model"] == "convnet v1"


def test_a_checkpoint_exports_the_weights_of_its_run(smoke_store: Path, mnist_dir: Path) -> None:
    """--from-checkpoint skips training and exports the checkpoint's best weights."""
    argv = [
        *("--model", "mlp", "--limit", "1500", "--epochs", "3", "--ood-per-kind", "50"),
        *("--out", str(smoke_store), "--data-dir", str(mnist_dir), "--version", "9"),
        *("--from-checkpoint", str(smoke_store / "checkpoints" / "mlp.pt")),
    ]
    assert train_main(argv) == 0
    first, again = (
        json.loads((smoke_store / "mlp" / v / "manifest.json").read_text()) for v in ("1", "9")
    )
    assert again["metrics"]["test_accuracy"] == first["metrics"]["test_accuracy"]
    assert again["training"]["from_checkpoint"] and not first["training"]["from_checkpoint"]
    assert again["training"]["history"] == first["training"]["history"]


def test_a_second_run_becomes_version_2(tmp_path: Path, mnist_dir: Path) -> None:
    argv = [
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--limit",
        "300",
        "--out",
        str(tmp_path),
        "--data-dir",
        str(mnist_dir),
        "--checkpoints",
        str(tmp_path / "ck"),
        "--outlier-weight",
        "0",
        "--ood-per-kind",
        "20",
    ]
    train_main(argv)
    train_main(argv)
    assert sorted(p.name for p in (tmp_path / "mlp").iterdir()) == ["1", "2"]


def layer_scorer(model: ConvNet | MLP) -> score.LayerScore:
    """A scorer with every feature its model uses, fitted on random activations."""
    rng = np.random.default_rng(0)
    names = score.FEATURES["convnet" if isinstance(model, ConvNet) else "mlp"]
    widths = {"fc1": 500, "hidden1": 16, "hidden2": 16}
    gaussians = {
        layer: score.fit_gaussian(
            np.abs(rng.normal(size=(400, widths[layer]))), np.arange(400) % 10
        )
        for layer in (n.removeprefix("maha_") for n in names if n.startswith("maha_"))
    }
    pca = score.fit_pca(rng.random((100, 784)), k=8)
    quadratic = score.fit_quadratic(rng.normal(size=(400, 8)), np.arange(400) % 10)
    weights = rng.normal(size=len(names))
    return score.LayerScore(names, gaussians, pca, weights, 0.3, quadratic)


@pytest.mark.parametrize(
    ("model_cls", "not_digit", "scored"),
    [
        (ConvNet, ("log_rest", 0.8, 3.0), False),
        (MLP, None, False),
        (MLP, ("energy", 1.5, 12.0), False),
        (ConvNet, None, True),
        (MLP, None, True),
    ],
)
def test_onnx_matches_pytorch_on_every_output(
    model_cls: type[ConvNet] | type[MLP],
    not_digit: tuple[str, float, float] | None,
    scored: bool,
    tmp_path: Path,
    mnist_dir: Path,
) -> None:
    """Parity on 256 test images, layers included: max |difference| <= 1e-4."""
    torch.manual_seed(0)
    model = model_cls()
    # Give batch norm statistics that are not the identity, as after training.
    model.train()
    with torch.no_grad():
        model(torch.rand(512, 1, 28, 28))
    model.eval()
    scorer = layer_scorer(model) if scored else None
    path = tmp_path / "model.onnx"
    names = export_onnx(model, path, temperature=1.7, not_digit=not_digit, scorer=scorer)

    images = to_tensor(data.load_split(mnist_dir, "test").images[:256])
    with torch.no_grad():
        wrapper = Exported(model, 1.7, not_digit, scorer).eval()
        expected = [t.numpy() for t in wrapper(images)]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(names, {"image": images.numpy()})
    worst = {n: float(np.abs(e - g).max()) for n, e, g in zip(names, expected, got, strict=True)}
    assert all(value <= 1e-4 for value in worst.values()), worst
    if scored:
        assert float(np.ptp(got[2])) > 0  # the score varies with the image
