"""SIGTERM: health NOT_SERVING, new work UNAVAILABLE, every accepted request still answered."""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import numpy as np

from service._proto.inference import grpc_service_pb2 as v2
from service._proto.inference import grpc_service_pb2_grpc as v2_grpc
from tests.integration import reference
from tests.integration.server import ServerProcess, inflight


def request_of(images: np.ndarray) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="image", datatype="FP32", shape=list(images.shape))
    request.raw_input_contents.append(images.tobytes())
    return request


def test_sigterm_finishes_in_flight_requests_and_refuses_new_ones() -> None:
    # Batches of one image make the queued work last seconds, so the signal lands mid-flight.
    server = ServerProcess(
        "--max-batch-size",
        "1",
        "--max-queue-size",
        "100000",
        "--max-images-per-request",
        "1000",
        "--grace-period-s",
        "60",
    )
    try:
        images = reference.test_images(400)
        expected = reference.run("mlp", images, ["probabilities"])["probabilities"]

        async def scenario() -> tuple[list[object], float, grpc.StatusCode | None]:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = v2_grpc.GRPCInferenceServiceStub(channel)
                calls = [
                    asyncio.ensure_future(stub.ModelInfer(request_of(images), timeout=120))
                    for _ in range(40)
                ]
                # Signal once most of them are in flight (bounded: a loaded machine may
                # already have answered a few before the last arrives).
                deadline = time.monotonic() + 30
                while inflight(server, "mlp") < 30 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                accepted = inflight(server, "mlp")
                assert accepted >= 10, "the requests were not in flight"
                server.signal(signal.SIGTERM)
                await asyncio.sleep(0.2)
                late: grpc.StatusCode | None = None
                try:
                    await stub.ModelInfer(request_of(images[:1]), timeout=10)
                except grpc.aio.AioRpcError as err:
                    late = err.code()
                return await asyncio.gather(*calls, return_exceptions=True), accepted, late

        results, accepted, late = asyncio.run(scenario())
        assert late == grpc.StatusCode.UNAVAILABLE
        answered = [r for r in results if isinstance(r, v2.ModelInferResponse)]
        # Every request in flight at the signal is answered in full; any that had not reached
        # the server yet is refused as new work.
        assert len(answered) >= accepted
        for result in answered:
            got = np.frombuffer(result.raw_output_contents[0], "<f4").reshape(400, 10)
            np.testing.assert_allclose(got, expected, atol=1e-6)
        for refused in (r for r in results if not isinstance(r, v2.ModelInferResponse)):
            assert isinstance(refused, grpc.aio.AioRpcError), refused
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert server.wait(60) == 0
        assert "stopped" in server.log
    finally:
        server.kill()
