"""`--workers N`: several processes on one port; every answer right, /metrics their sum, one
signal drains them all, and a dead worker takes the server down rather than half of it."""

from __future__ import annotations

import asyncio
import os
import re
import signal

import grpc
import numpy as np
import pytest

from service._proto.inference import grpc_service_pb2 as v2
from service._proto.inference import grpc_service_pb2_grpc as v2_grpc
from tests.integration import reference
from tests.integration.server import (
    OWN_CONNECTION,
    SLOW_DRAIN,
    ServerProcess,
    assert_drained,
    scrape,
    sigterm_when_in_flight,
    wait_for,
)

CHANNELS = 16


def request_of(images: np.ndarray, model: str = "mlp") -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=model)
    request.inputs.add(name="image", datatype="FP32", shape=list(images.shape))
    request.raw_input_contents.append(images.tobytes())
    request.outputs.add(name="probabilities")
    return request


def worker_pids(server: ServerProcess) -> list[int]:
    found = re.search(r"with \d+ workers \(pids ([\d, ]+)\)", server.log)
    assert found, server.log
    return [int(pid) for pid in found[1].split(", ")]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def workers() -> ServerProcess:
    server = ServerProcess("--workers", "2", "--models", "mlp")
    yield server  # type: ignore[misc]
    server.stop()


def test_connections_spread_over_the_workers_and_every_answer_is_right(
    workers: ServerProcess,
) -> None:
    images = reference.test_images(CHANNELS * 3)
    expected = reference.run("mlp", images, ["probabilities"])["probabilities"]
    before = scrape(workers)
    ok = (("api", "v2"), ("code", "OK"), ("model", "mlp"))
    channels = [grpc.insecure_channel(workers.address, options=OWN_CONNECTION) for _ in range(16)]
    try:
        # Channel i sends i+1 requests of 3 images: the workers' totals tell them apart.
        sent = 0
        for i, channel in enumerate(channels):
            stub = v2_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(i + 1):
                rows = images[3 * i : 3 * i + 3]
                response = stub.ModelInfer(request_of(rows), timeout=10)
                got = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(3, 10)
                np.testing.assert_allclose(got, expected[3 * i : 3 * i + 3], atol=1e-6)
                sent += 1
        # ModelStatistics answers for the worker behind the connection: two workers, two views.
        seen = {}
        for channel in channels:
            stats = v2_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(
                v2.ModelStatisticsRequest(name="mlp"), timeout=10
            )
            model = stats.model_stats[0]
            seen[(model.inference_count, model.last_inference)] = model.inference_count
    finally:
        for channel in channels:
            channel.close()
    assert len(seen) == 2, f"all {CHANNELS} connections went to one worker: {seen}"
    warmup_rows = sum(seen.values()) - 3 * sent
    assert warmup_rows == 0, seen
    after = scrape(workers)
    assert after[("digits_requests_total", ok)] - before.get(("digits_requests_total", ok), 0) == (
        sent
    )
    assert after[("digits_inflight_requests", (("model", "mlp"),))] == 0
    predictions = sum(
        value
        for (name, labels), value in after.items()
        if name == "digits_predictions_total" and ("model", "mlp") in labels
    )
    assert predictions == 3 * sent


def test_sigterm_drains_every_worker_and_the_parent_exits_zero() -> None:
    # The convnet: 24,000 of the mlp's one-image batches took about a second on two workers, so
    # on a loaded machine the first requests were answered before the last had arrived.
    model = "convnet"
    server = ServerProcess("--workers", "2", "--models", model, *SLOW_DRAIN)
    try:
        pids = worker_pids(server)
        images = reference.test_images(1000)
        expected = reference.run(model, images, ["probabilities"])["probabilities"]

        async def scenario() -> tuple[list[object], float]:
            channels = [
                grpc.aio.insecure_channel(server.address, options=OWN_CONNECTION) for _ in range(8)
            ]
            stubs = [v2_grpc.GRPCInferenceServiceStub(c) for c in channels]
            calls = [
                asyncio.ensure_future(s.ModelInfer(request_of(images, model), timeout=120))
                for s in stubs
                for _ in range(3)
            ]
            # /metrics sums the workers' in-flight gauges.
            accepted = await sigterm_when_in_flight(server, model, 16, at_least=8)
            try:
                return await asyncio.gather(*calls, return_exceptions=True), accepted
            finally:
                for channel in channels:
                    await channel.close()

        results, accepted = asyncio.run(scenario())
        assert_drained(results, accepted, expected)
        assert server.wait(60) == 0
        wait_for(lambda: not any(alive(pid) for pid in pids))
    finally:
        server.kill()


def test_a_worker_that_dies_stops_the_server_with_an_error() -> None:
    server = ServerProcess("--workers", "2", "--models", "mlp")
    try:
        first, second = worker_pids(server)
        os.kill(first, signal.SIGKILL)
        assert server.wait(30) == 1
        assert re.search(rf"worker \d \(pid {first}\) exited with status -9", server.log)
        wait_for(lambda: not alive(second))
    finally:
        server.kill()


def test_a_killed_parent_takes_its_workers_with_it() -> None:
    server = ServerProcess("--workers", "2", "--models", "mlp")
    pids = worker_pids(server)
    server.kill()
    wait_for(lambda: not any(alive(pid) for pid in pids))
