"""The KServe V2 protocol's answers, whatever the wire: the image tensor's checks, and the server
and model metadata, model config, statistics and repository index as plain dicts.

gRPC parses these dicts into its protobuf messages (`json_format.ParseDict`), HTTP writes them
as JSON, so the two transports answer the same thing. Numbers stay numbers: Triton's HTTP
clients (perf_analyzer among them) read `dims` and the statistics' counts as JSON integers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from service.domain.engine import Engine
from service.errors import InvalidInput, NotFound
from service.names import INPUT_NAME, INPUT_SHAPE, REQUIRED_OUTPUTS
from service.store.registry import ModelVersion
from service.transport.common import PLATFORM

PIXELS = 28 * 28
# Listed in metadata and returned when a request names no outputs; layers only when named.
DEFAULT_OUTPUTS = REQUIRED_OUTPUTS
# Triton's extension names, for the features this server has on both transports.
EXTENSIONS = ["binary_tensor_data", "statistics", "model_configuration", "model_repository"]
# The statistics Triton reports per model. We measure queue and compute_infer; input and output
# preparation happen inside the batch's compute, so they count its batches with no time of their
# own (perf_analyzer over HTTP requires the three compute counts to be equal).
DURATIONS = (
    "success",
    "fail",
    "queue",
    "compute_input",
    "compute_infer",
    "compute_output",
    "cache_hit",
    "cache_miss",
)

Json = dict[str, Any]


@functools.cache  # reads the installed distribution's files
def server_version() -> str:
    try:
        return metadata.version("digits-serving")
    except metadata.PackageNotFoundError:
        return "unknown"


def check_image_tensor(name: str, datatype: str, shape: Sequence[int], field: str) -> int:
    """The one input, `image` FP32 [N,1,28,28], checked by its declaration → N. `field` is
    where the request declared it ("inputs[0]")."""
    if name != INPUT_NAME:
        raise InvalidInput(f"{field}.name: expected 'image', got '{name}'")
    if datatype != "FP32":
        raise InvalidInput(f"{field}.datatype: expected FP32, got '{datatype}'")
    dims = list(shape)
    if len(dims) != 4 or dims[1:] != [1, 28, 28] or dims[0] < 1:
        raise InvalidInput(f"{field}.shape: expected [N,1,28,28] with N >= 1, got {dims}")
    return int(dims[0])


def server_metadata() -> Json:
    return {"name": "digits-serving", "version": server_version(), "extensions": EXTENSIONS}


def model_metadata(engine: Engine, model: ModelVersion) -> Json:
    return {
        "name": model.name,
        "versions": [str(v) for v in engine.versions(model)],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": INPUT_SHAPE}],
        "outputs": [
            {"name": name, "datatype": "FP32", "shape": model.outputs[name]}
            for name in DEFAULT_OUTPUTS
        ],
    }


def model_config(engine: Engine, model: ModelVersion) -> Json:
    """Triton's view of the model: the batch dimension is implicit (max_batch_size > 0)."""
    outputs = []
    for name in DEFAULT_OUTPUTS:
        dims = model.outputs[name][1:]
        output: Json = {"name": name, "data_type": "TYPE_FP32", "dims": dims or [1]}
        if not dims:  # a per-image scalar is declared Triton's way: dims [1], reshaped to []
            output["reshape"] = {"shape": []}
        outputs.append(output)
    gpu = model.gpu
    instances = (
        {"count": 1, "kind": "KIND_GPU", "gpus": [gpu.ordinal]}
        if gpu
        else {"count": 1, "kind": "KIND_CPU"}
    )
    batching = engine.batching
    return {
        "name": model.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": batching.max_batch_size,
        "input": [{"name": INPUT_NAME, "data_type": "TYPE_FP32", "dims": [1, 28, 28]}],
        "output": outputs,
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(batching.max_queue_delay * 1e6),
            "default_queue_policy": {"max_queue_size": batching.max_queue_size},
        },
        "instance_group": [instances],
    }


def statistics(engine: Engine, models: Sequence[ModelVersion]) -> Json:
    entries = []
    for model in models:
        stats = engine.stats(model)
        failed = stats.requests_failed + stats.requests_expired + stats.requests_rejected
        measured = {
            "success": (stats.requests_succeeded, 0),
            "fail": (failed, 0),
            "queue": (stats.requests_succeeded, stats.queue_ns),
            "compute_input": (stats.batches_executed, 0),
            "compute_infer": (stats.batches_executed, stats.compute_ns),
            "compute_output": (stats.batches_executed, 0),
        }
        durations = {}
        for key in DURATIONS:
            count, ns = measured.get(key, (0, 0))
            durations[key] = {"count": count, "ns": ns}
        entries.append(
            {
                "name": model.name,
                "version": str(model.version),
                "last_inference": stats.last_inference_ms,
                "inference_count": stats.rows_inferred,
                "execution_count": stats.batches_executed,
                "inference_stats": durations,
                "batch_stats": [],
            }
        )
    return {"model_stats": entries}


# The one load/unload parameter taken: tritonclient always sends it, and with no ensembles
# there is nothing that depends on a model.
UNLOAD_PARAMETERS = frozenset({"unload_dependents"})


def check_repository_request(
    repository: str, parameters: Sequence[str], allowed: frozenset[str] = frozenset()
) -> None:
    """A load or unload names no repository (the server has one store), and no parameter but
    `allowed` (a model's config and files come from the store, not the request)."""
    if repository:
        raise NotFound(f"repository_name: no repository '{repository}' (leave it empty)")
    refused = sorted(set(parameters) - allowed)
    if refused:
        raise InvalidInput(f"parameters: {', '.join(refused)} not supported")


def repository_index(engine: Engine, ready_only: bool) -> list[Json]:
    """Every version in service (READY, or UNAVAILABLE while stopping) and, unless
    `ready_only`, every version being loaded (LOADING) or not served, with the reason: it failed
    to load, or was unloaded."""
    state = "READY" if engine.ready else "UNAVAILABLE"
    index: list[Json] = [
        {"name": model.name, "version": str(model.version), "state": state}
        for model in engine.models()
    ]
    if ready_only:
        return index
    served = {(row["name"], row["version"]) for row in index}
    loading = {(name, str(version)) for name, version in engine.registry.loading} - served
    index += [{"name": name, "version": version, "state": "LOADING"} for name, version in loading]
    index += [
        {"name": f.name, "version": f.version, "state": "UNAVAILABLE", "reason": f.reason}
        for f in engine.failures
        if (f.name, f.version) not in served | loading
    ]
    return sorted(index, key=lambda row: (row["name"], row["version"].zfill(12)))
