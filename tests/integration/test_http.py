"""The HTTP port for real: `tritonclient.http` (JSON and binary tensors) and curl-like requests
against the server, answers equal to in-process onnxruntime, and bad input answered precisely."""

from __future__ import annotations

import base64
import concurrent.futures
import gzip
import http.client
import io
import json
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from PIL import Image, ImageDraw
from tritonclient.utils import InferenceServerException

from tests.integration import reference
from tests.integration.server import ServerProcess, scrape

MODELS = ["convnet", "mlp"]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")


@pytest.fixture(scope="module")
def strict() -> Iterator[ServerProcess]:
    """Small limits: a 64 KiB body, half a second for it to arrive."""
    process = ServerProcess(
        "--models", '["mlp"]', "--max-message-bytes", "65536", "--http-body-timeout-s", "0.5"
    )
    try:
        yield process
    finally:
        process.stop()


def request(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request, as curl makes it; (status, headers, body) whatever the status."""
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def error_of(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    status, answer_headers, answer = request(server, method, path, body, headers)
    assert answer_headers["Content-Type"].startswith("application/json")
    assert b"Traceback" not in answer
    return status, json.loads(answer)["error"]


def png(draw: str = "seven", size: int = 200) -> bytes:
    """A black-on-white drawing, as a person would photograph or draw one."""
    image = Image.new("L", (size, size), 255)
    pen = ImageDraw.Draw(image)
    if draw == "seven":
        pen.line([(60, 40), (140, 40), (90, 170)], fill=0, width=18)
    elif draw == "one":
        pen.line([(100, 30), (100, 170)], fill=0, width=18)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def infer_request(images: np.ndarray, binary: bool) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "image",
                "datatype": "FP32",
                "shape": list(images.shape),
                "data": images.ravel().tolist(),
            }
        ],
        "parameters": {"binary_data_output": binary},
    }


# ---- KServe V2 with tritonclient.http ---------------------------------------------------------


def test_health_metadata_and_config_speak_triton(
    client: httpclient.InferenceServerClient,
) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp") and client.is_model_ready("mlp", "1")
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready("mlp", "99")
    server = client.get_server_metadata()
    assert server["name"] == "digits-serving" and "binary_tensor_data" in server["extensions"]
    metadata = client.get_model_metadata("convnet")
    assert metadata["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert [o["name"] for o in metadata["outputs"]] == ["probabilities", "logits", "not_digit"]
    config = client.get_model_config("convnet")
    assert config["max_batch_size"] >= 1 and config["input"][0]["dims"] == [1, 28, 28]
    assert config["output"][2] == {
        "name": "not_digit",
        "data_type": "TYPE_FP32",
        "dims": [1],
        "reshape": {"shape": []},
    }


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_equals_direct_onnxruntime(
    client: httpclient.InferenceServerClient, model: str, binary: bool
) -> None:
    images = reference.test_images(8)
    tensor = httpclient.InferInput("image", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images, binary_data=binary)
    names = ["probabilities", "logits", "not_digit"]
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in names]
    result = client.infer(model, [tensor], outputs=outputs, request_id="r-8")
    expected = reference.run(model, images, names)
    for name, value in expected.items():
        np.testing.assert_allclose(result.as_numpy(name), value, rtol=1e-5, atol=1e-6)
    response = result.get_response()
    assert response["id"] == "r-8" and response["model_name"] == model
    assert response["model_version"] == str(reference.newest(model))


def test_layers_versions_and_compressed_requests(client: httpclient.InferenceServerClient) -> None:
    images = reference.test_images(3)
    tensor = httpclient.InferInput("image", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    # A binary output beside a JSON one, from an older version, in a gzip-compressed body.
    outputs = [
        httpclient.InferRequestedOutput("layer.hidden1", binary_data=False),
        httpclient.InferRequestedOutput("probabilities"),
    ]
    result = client.infer(
        "mlp", [tensor], model_version="2", outputs=outputs, request_compression_algorithm="gzip"
    )
    expected = reference.run("mlp", images, ["layer.hidden1", "probabilities"], version=2)
    for name, value in expected.items():
        np.testing.assert_allclose(result.as_numpy(name), value, rtol=1e-5, atol=1e-6)
    assert result.get_response()["model_version"] == "2"


def test_statistics_and_repository_index(client: httpclient.InferenceServerClient) -> None:
    tensor = httpclient.InferInput("image", [1, 1, 28, 28], "FP32")
    tensor.set_data_from_numpy(reference.test_images(1))
    before = client.get_inference_statistics("mlp")["model_stats"][0]["inference_count"]
    client.infer("mlp", [tensor])
    stats = client.get_inference_statistics("mlp")["model_stats"][0]
    assert stats["inference_count"] == before + 1
    assert isinstance(stats["inference_stats"]["compute_infer"]["ns"], int)
    index = client.get_model_repository_index()
    assert {(m["name"], m["state"]) for m in index} >= {("mlp", "READY"), ("convnet", "READY")}


def test_errors_reach_tritonclient_with_their_status(
    client: httpclient.InferenceServerClient,
) -> None:
    tensor = httpclient.InferInput("image", [1, 1, 28, 28], "FP32")
    tensor.set_data_from_numpy(reference.test_images(1))
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("no-such-model", [tensor])
    assert unknown.value.status() == "404" and "no-such-model" in unknown.value.message()
    wrong = httpclient.InferInput("image", [1, 28, 28], "FP32")
    wrong.set_data_from_numpy(reference.test_images(1)[0])
    with pytest.raises(InferenceServerException) as shape:
        client.infer("mlp", [wrong])
    assert shape.value.status() == "400" and "inputs[0].shape" in shape.value.message()
    missing = [httpclient.InferRequestedOutput("layer.nope")]
    with pytest.raises(InferenceServerException) as output:
        client.infer("mlp", [tensor], outputs=missing)
    assert output.value.status() == "404" and "outputs[0]" in output.value.message()


def test_non_finite_pixels_get_finite_answers(server: ServerProcess) -> None:
    body = infer_request(np.zeros((1, 1, 28, 28), np.float32), binary=False)
    body["inputs"][0]["data"][:3] = [float("nan"), float("inf"), float("-inf")]
    status, _, answer = request(server, "POST", "/v2/models/mlp/infer", json.dumps(body).encode())
    assert status == 200
    probabilities = json.loads(answer)["outputs"][0]["data"]
    assert np.isfinite(probabilities).all() and abs(sum(probabilities) - 1) < 1e-4


# ---- bad input, as curl would send it ----------------------------------------------------------


def body_of(data: Any = None, datatype: str = "FP32", **extra: Any) -> bytes:
    """A one-image infer body: the 784 pixels of a blank image unless `data` says otherwise."""
    tensor: dict[str, Any] = {"name": "image", "datatype": datatype, "shape": [1, 1, 28, 28]}
    tensor["data"] = [0.0] * 784 if data is None else data
    return json.dumps({"inputs": [tensor], **extra}).encode()


HEADER = "Inference-Header-Content-Length"
CLASSIFICATION: dict[str, Any] = {
    "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}]
}
BAD_INFER = [
    ("not json", b'{"inputs": [', {}, 400, "body: not valid JSON"),
    ("no inputs", b'{"outputs": []}', {}, 400, "inputs: expected exactly one"),
    ("two inputs", b'{"inputs": [{}, {}]}', {}, 400, "inputs: expected exactly one"),
    ("an array", b"[1, 2]", {}, 400, "body: expected a JSON object"),
    ("bad datatype", body_of(datatype="INT8"), {}, 400, "inputs[0].datatype"),
    ("strings", body_of(["a"] * 784), {}, 400, "inputs[0].data: expected numbers"),
    ("too few values", body_of([0.5]), {}, 400, "needs 784 values, got 1"),
    ("ragged values", body_of([[0.5], [0.5, 0.5]]), {}, 400, "inputs[0].data"),
    ("a header past the body", b"{}", {HEADER: "9999"}, 400, HEADER),
    ("a header that is no number", b"{}", {HEADER: "ten"}, 400, HEADER),
    ("a wrong content type", b"{}", {"Content-Type": "text/html"}, 415, "Content-Type"),
    ("classification", body_of(**CLASSIFICATION), {}, 400, "classification: not supported"),
    ("a bad timeout", body_of(parameters={"timeout": -1}), {}, 400, "parameters.timeout"),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [case[1:] for case in BAD_INFER],
    ids=[case[0] for case in BAD_INFER],
)
def test_bad_infer_requests_answer_json_errors_naming_the_field(
    server: ServerProcess, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    got_status, error = error_of(server, "POST", "/v2/models/mlp/infer", body, headers)
    assert (got_status, message) == (status, message) and message in error, error


def test_binary_size_that_lies_is_refused(server: ServerProcess) -> None:
    tensor: dict[str, Any] = {"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28]}
    tensor["parameters"] = {"binary_data_size": 3136}
    head = json.dumps({"inputs": [tensor]}).encode()
    short = head + bytes(3000)
    status, error = error_of(
        server,
        "POST",
        "/v2/models/mlp/infer",
        short,
        {"Inference-Header-Content-Length": str(len(head))},
    )
    assert status == 400 and "binary_data_size: 3136" in error and "3000" in error
    unclaimed = json.dumps(infer_request(reference.test_images(1), binary=False)).encode()
    status, error = error_of(
        server,
        "POST",
        "/v2/models/mlp/infer",
        unclaimed + b"xxxx",
        {"Inference-Header-Content-Length": str(len(unclaimed))},
    )
    assert status == 400 and "no input gives parameters.binary_data_size" in error


def test_unknown_routes_and_methods_answer_json(server: ServerProcess) -> None:
    assert error_of(server, "GET", "/v3/anything")[0] == 404
    assert error_of(server, "GET", "/v2/models/no-such-model")[0] == 404
    status, error = error_of(server, "DELETE", "/v2/models/mlp")
    assert status == 405 and "DELETE" in error


def test_a_body_over_the_limit_answers_413(strict: ServerProcess) -> None:
    status, error = error_of(strict, "POST", "/v2/models/mlp/infer", bytes(70_000))
    assert status == 413 and "65536" in error
    # A gzip body small on the wire and over the limit once inflated is refused alike.
    bomb = gzip.compress(b" " * 1_000_000)
    status, _ = error_of(strict, "POST", "/v2/models/mlp/infer", bomb, {"Content-Encoding": "gzip"})
    assert status == 413


def test_slow_and_truncated_bodies_harm_no_one(strict: ServerProcess) -> None:
    good = json.dumps(infer_request(reference.test_images(1), binary=False)).encode()
    with socket.create_connection(("127.0.0.1", strict.http_port), timeout=10) as slow:
        slow.sendall(
            b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(good) + good[:100]
        )
        answer = slow.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408") and b"not received within 0.5 s" in answer
    with socket.create_connection(("127.0.0.1", strict.http_port), timeout=10) as truncated:
        truncated.sendall(
            b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % len(good)
            + good[:100]
        )
    status, _, _ = request(strict, "POST", "/v2/models/mlp/infer", good)
    assert status == 200
    assert "Traceback" not in strict.log


# ---- /v1/classify ------------------------------------------------------------------------------


def classify(server: ServerProcess, body: bytes, query: str = "", **headers: str) -> Any:
    url = f"{server.http_url}/v1/classify{query}"
    with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=30) as answer:
        assert answer.headers["Content-Type"].startswith("application/json")
        return json.load(answer)


def test_classify_takes_a_png_as_curl_sends_it(server: ServerProcess) -> None:
    # urllib, like curl --data-binary, declares application/x-www-form-urlencoded.
    answer = classify(server, png("seven"))
    assert answer["model"] == "convnet" and answer["version"] == reference.newest("convnet")
    result = answer["results"][0]
    assert result["digit"] == 7 and result["confidence"] > 0.9
    assert len(result["probabilities"]) == 10
    assert result["not_digit"]["is_digit"] is True
    assert "layers" not in result


def test_classify_answers_layers_as_lists_or_base64(server: ServerProcess) -> None:
    query = "?model=mlp&layers=input,hidden1&include_logits=true"
    as_list = classify(server, png("one"), query, **{"Content-Type": "image/png"})
    as_base64 = classify(server, png("one"), query + "&layer_data=base64")
    first, second = as_list["results"][0], as_base64["results"][0]
    assert first["digit"] == 1 and len(first["logits"]) == 10
    assert [layer["name"] for layer in first["layers"]] == ["input", "hidden1"]
    for listed, encoded in zip(first["layers"], second["layers"], strict=True):
        decoded = np.frombuffer(base64.b64decode(encoded["data"]), "<f4")
        np.testing.assert_allclose(decoded, listed["data"], rtol=1e-6)
        assert listed["shape"] == encoded["shape"]
    assert first["layers"][0]["shape"] == [1, 28, 28]


def test_models_name_their_connections_and_the_mlp_serves_the_weights_it_runs(
    server: ServerProcess,
) -> None:
    status, _, body = request(server, "GET", "/v1/models")
    assert status == 200
    listed = {(m["name"], m["version"]): m for m in json.loads(body)["models"]}
    version = reference.newest("mlp")
    assert listed[("mlp", version)]["connections"] == [
        ["hidden1", "hidden2"],
        ["hidden2", "output"],
    ]
    assert listed[("convnet", reference.newest("convnet"))]["connections"] == []

    status, _, body = request(server, "GET", f"/v1/models/mlp/connections?version={version}")
    assert status == 200
    served = json.loads(body)
    assert (served["model"], served["version"]) == ("mlp", version)
    assert served["connections"] == reference.manifest("mlp", version)["connections"]
    # They are the weights the graph runs: hidden2 and the logits follow from the layer before.
    query = f"?model=mlp&version={version}&layers=hidden1,hidden2&include_logits=1"
    answer = classify(server, png("one"), query)
    result = answer["results"][0]
    layers = {layer["name"]: np.array(layer["data"]) for layer in result["layers"]}
    into_hidden2, into_output = (
        (np.array(link["weights"]), np.array(link["bias"])) for link in served["connections"]
    )
    hidden2 = 1 / (1 + np.exp(-(into_hidden2[0] @ layers["hidden1"] + into_hidden2[1])))
    assert np.allclose(hidden2, layers["hidden2"], atol=1e-5)
    logits = into_output[0] @ layers["hidden2"] + into_output[1]
    temperature = reference.manifest("mlp", version)["metrics"]["temperature"]
    assert np.allclose(logits / temperature, result["logits"], atol=1e-4)

    assert json.loads(request(server, "GET", "/v1/models/convnet/connections")[2]) == {
        "model": "convnet",
        "version": reference.newest("convnet"),
        "connections": [],
    }
    assert error_of(server, "GET", "/v1/models/nope/connections")[0] == 404
    assert error_of(server, "GET", "/v1/models/mlp/connections?version=99")[0] == 404
    assert error_of(server, "GET", "/v1/models/mlp/connections?version=x")[0] == 400


def test_classify_takes_several_images_as_multipart(server: ServerProcess) -> None:
    boundary = uuid.uuid4().hex
    parts = b""
    for name, drawing in (("a", "seven"), ("b", "one")):
        parts += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{name}.png"\r\nContent-Type: image/png\r\n\r\n'
            ).encode()
            + png(drawing)
            + b"\r\n"
        )
    parts += f"--{boundary}--\r\n".encode()
    answer = classify(
        server, parts, "?layers=*", **{"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert [r["digit"] for r in answer["results"]] == [7, 1]
    names = [layer["name"] for layer in answer["results"][0]["layers"]]
    assert names == ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "fc1"]


MULTIPART_X = {"Content-Type": "multipart/form-data; boundary=x"}
BAD_CLASSIFY = [
    ("not an image", b"hello", "", {}, 400, "body: unsupported format"),
    ("an empty body", b"", "", {}, 400, "body: empty"),
    ("no such layer", None, "?layers=conv9", {}, 404, "layers[0]"),
    ("no such model", None, "?model=nope", {}, 404, "'nope'"),
    ("a version that is no number", None, "?version=abc", {}, 400, "version"),
    ("a flag that is no flag", None, "?include_logits=maybe", {}, 400, "include_logits"),
    ("json", b"{}", "", {"Content-Type": "application/json"}, 415, "Content-Type"),
    ("a broken multipart", b"junk", "", MULTIPART_X, 400, "multipart"),
]


@pytest.mark.parametrize(
    ("body", "query", "headers", "status", "message"),
    [case[1:] for case in BAD_CLASSIFY],
    ids=[case[0] for case in BAD_CLASSIFY],
)
def test_bad_classify_requests_answer_json_errors(
    server: ServerProcess,
    body: bytes | None,
    query: str,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    sent = png() if body is None else body
    got_status, error = error_of(server, "POST", "/v1/classify" + query, sent, headers)
    assert got_status == status and message in error, error


# ---- metrics and load --------------------------------------------------------------------------


def test_http_requests_are_counted_under_their_api(server: ServerProcess) -> None:
    def count(api: str, code: str, model: str) -> float:
        key = ("digits_requests_total", (("api", api), ("code", code), ("model", model)))
        return scrape(server).get(key, 0.0)

    before = [
        count("v2_http", "OK", "mlp"),
        count("v2_http", "INVALID_ARGUMENT", "mlp"),
        count("digits_http", "OK", "convnet"),
    ]
    good = json.dumps(infer_request(reference.test_images(1), binary=True)).encode()
    assert request(server, "POST", "/v2/models/mlp/infer", good)[0] == 200
    assert request(server, "POST", "/v2/models/mlp/infer", b"{")[0] == 400
    classify(server, png())
    after = [
        count("v2_http", "OK", "mlp"),
        count("v2_http", "INVALID_ARGUMENT", "mlp"),
        count("digits_http", "OK", "convnet"),
    ]
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]


def test_concurrent_keep_alive_clients_all_get_their_own_answers(server: ServerProcess) -> None:
    """Eight keep-alive HTTP clients for 2 s: every answer is its own image's, the log clean."""
    images = reference.test_images(16)
    expected = reference.run("mlp", images, ["probabilities"])["probabilities"]

    def worker(offset: int) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        done = 0
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            i = (offset + done) % 16
            body = json.dumps(infer_request(images[i : i + 1], binary=False)).encode()
            connection.request("POST", "/v2/models/mlp/infer", body=body)
            answer = json.loads(connection.getresponse().read())
            got = np.asarray(answer["outputs"][0]["data"], np.float32)
            np.testing.assert_allclose(got, expected[i], rtol=1e-5, atol=1e-6)
            done += 1
        connection.close()
        return done

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answered = sum(pool.map(worker, range(8)))
    assert answered >= 8
    assert "Traceback" not in server.log
