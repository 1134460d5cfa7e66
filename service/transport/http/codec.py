"""KServe V2 inference over HTTP: the JSON body, and Triton's binary tensor data extension.

A request is JSON, or JSON followed by raw tensor bytes: the `Inference-Header-Content-Length`
header says where the JSON ends, and each binary input says its size in
`parameters.binary_data_size`. An output goes back as binary when it asks for
`parameters.binary_data` or the request for `parameters.binary_data_output`; the response's
JSON then names each binary output's size, in order, and the same header says where it ends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import InvalidInput
from service.names import FloatArray, Outputs
from service.transport.kserve import DEFAULT_OUTPUTS, PIXELS, check_image_tensor

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    count: int  # images, the shape's N
    data: bytes | FloatArray  # the image tensor: raw FP32 bytes or the JSON values as float32
    outputs: list[str]
    binary: frozenset[str]  # outputs to answer as binary data
    timeout_us: int | None  # Triton's per-request `timeout` parameter


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{field}: expected a JSON object, got {type(value).__name__}")
    return value


def _integer(value: Any, field: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{field}: expected an integer >= {minimum}, got {value!r}")
    return value


def _flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{field}: expected true or false, got {value!r}")
    return value


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON part, binary part) by the `Inference-Header-Content-Length` header."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 < length <= len(body):
        raise InvalidInput(
            f"{HEADER_LENGTH}: {header_length!r} does not fit a body of {len(body)} bytes"
        )
    return body[:length], body[length:]


def parse_json(data: bytes, field: str = "body") -> dict[str, Any]:
    try:
        value = json.loads(data)
    except UnicodeDecodeError:
        raise InvalidInput(
            f"{field}: not UTF-8 text; binary tensors need {HEADER_LENGTH}"
        ) from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{field}: not valid JSON ({exc.msg} at byte {exc.pos})") from None
    return _object(value, field)


def _json_values(data: Any, count: int) -> FloatArray:
    field = "inputs[0].data"
    try:
        array = np.asarray(data)
    except ValueError:  # ragged nesting
        raise InvalidInput(f"{field}: not a list of numbers of one shape") from None
    if array.dtype.kind not in "iuf":
        raise InvalidInput(f"{field}: expected numbers for FP32, got {array.dtype.kind!r} values")
    if array.size != count * PIXELS:
        raise InvalidInput(
            f"{field}: shape [{count},1,28,28] needs {count * PIXELS} values, got {array.size}"
        )
    return array.astype(np.float32, copy=False).reshape(-1)


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """Refuses, naming the field, anything but one FP32 `image` [N,1,28,28] given exactly once
    (JSON `data` or binary bytes, never both), and outputs asked for in a way it cannot answer."""
    head, binary = split_body(body, header_length)
    request = parse_json(head)
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f"id: expected a string, got {request_id!r}")
    parameters = _object(request.get("parameters", {}), "parameters")
    binary_output = _flag(
        parameters.get("binary_data_output", False), "parameters.binary_data_output"
    )
    timeout = parameters.get("timeout")
    timeout_us = None if timeout is None else _integer(timeout, "parameters.timeout")

    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        got = len(inputs) if isinstance(inputs, list) else type(inputs).__name__
        raise InvalidInput(f"inputs: expected exactly one input 'image', got {got}")
    tensor = _object(inputs[0], "inputs[0]")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise InvalidInput(f"inputs[0].shape: expected a list of integers, got {shape!r}")
    count = check_image_tensor(
        str(tensor.get("name")), str(tensor.get("datatype")), shape, "inputs[0]"
    )
    tensor_parameters = _object(tensor.get("parameters", {}), "inputs[0].parameters")
    size = tensor_parameters.get("binary_data_size")
    data: bytes | FloatArray
    if size is not None:
        size = _integer(size, "inputs[0].parameters.binary_data_size")
        if "data" in tensor:
            raise InvalidInput("inputs[0]: has both 'data' and parameters.binary_data_size")
        if size != len(binary) or size != count * PIXELS * 4:
            raise InvalidInput(
                f"inputs[0].parameters.binary_data_size: {size}, but shape {shape} needs "
                f"{count * PIXELS * 4} bytes of FP32 and the body has {len(binary)} after the "
                "JSON"
            )
        data = binary
    else:
        if binary:
            raise InvalidInput(
                f"body: {len(binary)} bytes after the JSON, and no input gives "
                "parameters.binary_data_size"
            )
        if "data" not in tensor:
            raise InvalidInput("inputs[0].data: missing (or give parameters.binary_data_size)")
        data = _json_values(tensor["data"], count)

    outputs = request.get("outputs")
    if outputs is None:
        names = list(DEFAULT_OUTPUTS)
        binaries = set(names) if binary_output else set()
    else:
        if not isinstance(outputs, list):
            raise InvalidInput(f"outputs: expected a list, got {type(outputs).__name__}")
        names, binaries = [], set()
        for i, entry in enumerate(outputs):
            output = _object(entry, f"outputs[{i}]")
            name = output.get("name")
            if not isinstance(name, str):
                raise InvalidInput(f"outputs[{i}].name: expected a string, got {name!r}")
            wanted = _object(output.get("parameters", {}), f"outputs[{i}].parameters")
            if wanted.get("classification", 0):
                raise InvalidInput(f"outputs[{i}].parameters.classification: not supported")
            field = f"outputs[{i}].parameters.binary_data"
            if _flag(wanted.get("binary_data", binary_output), field):
                binaries.add(name)
            names.append(name)
    return InferRequest(request_id, count, data, names, frozenset(binaries), timeout_us)


def encode_response(
    request: InferRequest, model: str, version: int, result: Outputs
) -> tuple[bytes, int | None]:
    """(body, JSON header length when binary outputs follow it, else None)."""
    outputs = []
    blobs = []
    for name in request.outputs:
        value = result[name]
        output: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(value.shape)}
        if name in request.binary:
            blob = value.astype("<f4", copy=False).tobytes()
            output["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            output["data"] = value.ravel().tolist()
        outputs.append(output)
    answer: dict[str, Any] = {"model_name": model, "model_version": str(version)}
    if request.id is not None:
        answer["id"] = request.id
    answer["outputs"] = outputs
    head = json.dumps(answer, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)
