"""The Python client (sync and asyncio) and the `digits` command against the real server."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from digits_client.cli import main, unsure
from digits_client.client import (
    AsyncDigitsClient,
    Classification,
    DigitsClient,
    DigitsError,
    ModelSummary,
)
from PIL import Image

from service.domain.preprocess import ImageLimits, decode_image
from tests.integration.server import ServerProcess
from training.data import Split, load_split

MNIST = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "mnist"
COUNT = 20


@pytest.fixture(scope="module")
def mnist() -> Split:
    return load_split(MNIST, "test")


@pytest.fixture(scope="module")
def pngs(mnist: Split) -> list[bytes]:
    """The first test digits as a person would upload them: big, black ink on white."""
    out = []
    for pixels in mnist.images[:COUNT]:
        buffer = io.BytesIO()
        Image.fromarray(255 - pixels).resize((140, 140)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


@pytest.fixture(scope="module")
def labels(mnist: Split) -> list[int]:
    return [int(label) for label in mnist.labels[:COUNT]]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[DigitsClient]:
    with DigitsClient(server.address) as client:
        yield client


@pytest.fixture(scope="module")
def served(client: DigitsClient) -> list[ModelSummary]:
    """Whichever models the store holds now (mlp, and convnet once trained)."""
    models = client.models()
    assert models, "the server lists no models"
    return models


def check(results: list[Classification], labels: list[int], model: ModelSummary) -> None:
    correct = sum(r.digit == label for r, label in zip(results, labels, strict=True))
    assert correct >= 17, f"{model.name}: {correct} of {len(labels)} right"
    for r in results:
        assert r.probabilities.shape == (10,)
        assert r.probabilities.sum() == pytest.approx(1, abs=1e-4)
        assert r.confidence == pytest.approx(r.probabilities.max())
        assert r.digit == int(r.probabilities.argmax()) != r.runner_up
        assert 0 <= r.top2_margin <= r.confidence
        assert r.not_digit is not None and 0 <= r.not_digit <= 1
        assert r.threshold == pytest.approx(model.not_digit_threshold)
        assert r.is_digit == (r.not_digit <= model.not_digit_threshold)


def test_sync_client_reads_real_digits(
    client: DigitsClient, served: list[ModelSummary], pngs: list[bytes], labels: list[int]
) -> None:
    for model in served:
        check(client.classify(pngs, model=model.name), labels, model)


def test_async_client_reads_real_digits(
    server: ServerProcess, served: list[ModelSummary], pngs: list[bytes], labels: list[int]
) -> None:
    async def session() -> tuple[str, list[ModelSummary], list[list[Classification]]]:
        async with AsyncDigitsClient(server.address) as client:
            calls = [client.classify(pngs, model=m.name) for m in served]
            return await client.health(), await client.models(), await asyncio.gather(*calls)

    status, models, answers = asyncio.run(session())
    assert status == "SERVING"
    assert models == served
    for model, results in zip(served, answers, strict=True):
        check(results, labels, model)


def test_files_and_arrays_are_accepted_as_images(
    client: DigitsClient,
    served: list[ModelSummary],
    pngs: list[bytes],
    mnist: Split,
    tmp_path: Path,
) -> None:
    (tmp_path / "digit.png").write_bytes(pngs[0])
    grey = mnist.images[0]
    images = [tmp_path / "digit.png", str(tmp_path / "digit.png"), grey, grey / np.float32(255)]
    results = client.classify(images, model=served[0].name, not_digit=False)
    assert [r.digit for r in results] == [int(mnist.labels[0])] * 4
    assert results[2].not_digit is results[2].is_digit is None
    np.testing.assert_allclose(results[2].probabilities, results[3].probabilities, atol=1e-6)
    with pytest.raises(ValueError, match="28x28"):
        client.classify([np.zeros((27, 28))], model=served[0].name)


def test_layers_come_back_shaped_as_the_model_describes(
    client: DigitsClient, served: list[ModelSummary], pngs: list[bytes]
) -> None:
    for model in served:
        [result] = client.classify(pngs[:1], model=model.name, layers=["*"], logits=True)
        assert list(result.layers) == list(model.layers)  # every layer, in the order they run
        assert {name: a.shape for name, a in result.layers.items()} == model.layers
        assert all(a.dtype == np.float32 for a in result.layers.values())
        assert result.logits is not None
        softmax = np.exp(result.logits - result.logits.max())
        np.testing.assert_allclose(softmax / softmax.sum(), result.probabilities, atol=1e-5)
        first = next(iter(model.layers))
        [one] = client.classify(pngs[:1], model=model.name, layers=[first])
        assert list(one.layers) == [first] and one.logits is None
        assert client.model(model.name, model.version) == model


def test_unknown_model_is_not_found(client: DigitsClient, pngs: list[bytes]) -> None:
    with pytest.raises(DigitsError) as caught:
        client.classify(pngs[:1], model="no-such-model")
    assert caught.value.code == "NOT_FOUND"
    assert "no-such-model" in caught.value.message
    with pytest.raises(DigitsError, match="NOT_FOUND"):
        client.model("no-such-model")


def test_corrupt_image_is_invalid_argument(
    client: DigitsClient, served: list[ModelSummary]
) -> None:
    with pytest.raises(DigitsError) as caught:
        client.classify([b"\x89PNG\r\n\x1a\n not really"], model=served[0].name)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert "images[0]" in caught.value.message


def test_health_names_the_status(client: DigitsClient) -> None:
    assert client.health() == "SERVING"
    assert client.health("digits.v1.Digits") == "SERVING"
    assert client.health("no.such.Service") == "SERVICE_UNKNOWN"


def test_unreachable_server_is_unavailable() -> None:
    with DigitsClient("127.0.0.1:1", timeout=5) as client, pytest.raises(DigitsError) as caught:
        client.models()
    assert caught.value.code == "UNAVAILABLE"


def test_unsure_names_the_two_candidates() -> None:
    probabilities = np.zeros(10, np.float32)
    probabilities[[7, 9]] = 0.55, 0.45
    close = Classification(digit=7, confidence=0.55, probabilities=probabilities, top2_margin=0.1)
    assert unsure(close) == "unsure (7 or 9?)"
    assert unsure(Classification(7, 0.9, probabilities, top2_margin=0.8)) == ""


# ---- the `digits` command --------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path, pngs: list[bytes]) -> list[str]:
    paths = []
    for i, data in enumerate(pngs[:3]):
        path = tmp_path / f"digit-{i}.png"
        path.write_bytes(data)
        paths.append(str(path))
    return paths


def test_cli_classify_prints_a_table(
    server: ServerProcess, served: list[ModelSummary], files: list[str], labels: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    argv = ["--target", server.address, "classify", *files, "--model", served[0].name]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["file", "digit", "confidence", "not-a-digit", "verdict"]
    for file, label, line in zip(files, labels[:3], lines[1:], strict=True):
        assert line.split()[:2] == [file, str(label)]
        assert "digit" in line


def test_cli_classify_json(
    server: ServerProcess, served: list[ModelSummary], files: list[str], labels: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    argv = ["--target", server.address, "classify", *files, "--model", served[0].name, "--json"]
    assert main(argv) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["model"] == served[0].name
    assert [r["file"] for r in answer["results"]] == files
    assert [r["digit"] for r in answer["results"]] == labels[:3]
    assert all(len(r["probabilities"]) == 10 for r in answer["results"])


def test_cli_models_and_health(
    server: ServerProcess, served: list[ModelSummary], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--target", server.address, "models"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "not-digit threshold" in out
    for model in served:
        assert f"{model.test_accuracy:.2%}" in out and f"{model.parameters:,}" in out
    assert main(["--target", server.address, "health"]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    assert main(["--target", server.address, "health", "no.such.Service"]) == 1
    assert capsys.readouterr().out.strip() == "SERVICE_UNKNOWN"


def test_cli_inspect_writes_a_png(
    server: ServerProcess, served: list[ModelSummary], files: list[str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    for model in served:
        out = tmp_path / f"{model.name}.png"
        argv = ["--target", server.address, "inspect", files[0], "--model", model.name]
        assert main([*argv, "--out", str(out)]) == 0
        assert f"wrote {out}" in capsys.readouterr().out
        with Image.open(out) as image:
            assert image.format == "PNG"
            assert image.width > 400 and image.height > 300


def test_cli_missing_file_is_a_usage_error(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.png")
    assert main(["--target", server.address, "classify", missing]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"{missing}: no such file" in captured.err
    assert main(["--target", server.address, "classify"]) == 2  # no IMG at all


def test_cli_server_error_is_one_line(
    server: ServerProcess, files: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--target", server.address, "classify", files[0], "--model", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NOT_FOUND" in err and "Traceback" not in err


def test_the_input_layer_is_the_image_as_the_server_prepared_it(
    client: DigitsClient, pngs: list[bytes]
) -> None:
    [result] = client.classify(pngs[:1], model="mlp", layers=["input"])
    assert list(result.layers) == ["input"]
    prepared = decode_image(pngs[0], index=0, limits=ImageLimits())
    np.testing.assert_array_equal(result.layers["input"], prepared[None])
    [both] = client.classify(pngs[:1], model="mlp", layers=["hidden2", "input"])
    assert list(both.layers) == ["input", "hidden2"]  # the input first, then in model order
