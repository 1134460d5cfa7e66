"""A full queue sheds with RESOURCE_EXHAUSTED; expired requests never reach the model."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from service._proto.digits.v1 import digits_pb2, digits_pb2_grpc
from service._proto.inference import grpc_service_pb2 as v2
from service._proto.inference import grpc_service_pb2_grpc as v2_grpc
from tests.integration import reference
from tests.integration.server import ROOT, ServerProcess, inflight, scrape

# The convnet: its single-image batches are slow enough that a queue of them lasts a second.
MODEL = "convnet"


def gone_before_running(server: ServerProcess) -> float:
    """Requests the server counted as DEADLINE_EXCEEDED or CANCELLED: when the client's own
    deadline fires first, the server sees a cancellation a little before its own deadline."""
    samples = scrape(server)
    return sum(
        samples.get(
            ("digits_requests_total", (("api", "v2"), ("code", code), ("model", MODEL))), 0.0
        )
        for code in ("DEADLINE_EXCEEDED", "CANCELLED")
    )


@pytest.fixture(scope="module")
def small_queue() -> Iterator[ServerProcess]:
    server = ServerProcess(
        "--models",
        "convnet",
        "--max-batch-size",
        "1",
        "--max-queue-size",
        "4100",
        "--max-images-per-request",
        "4000",
    )
    try:
        yield server
    finally:
        server.stop()


def request_of(images: np.ndarray) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="image", datatype="FP32", shape=list(images.shape))
    request.raw_input_contents.append(images.tobytes())
    return request


def rows_inferred(stub: v2_grpc.GRPCInferenceServiceStub) -> int:
    stats = stub.ModelStatistics(v2.ModelStatisticsRequest(name=MODEL), timeout=5)
    return int(stats.model_stats[0].inference_count)


def test_full_queue_answers_resource_exhausted(small_queue: ServerProcess) -> None:
    images = reference.test_images(500)

    async def flood() -> list[object]:
        async with grpc.aio.insecure_channel(small_queue.address) as channel:
            stub = v2_grpc.GRPCInferenceServiceStub(channel)
            calls = [stub.ModelInfer(request_of(images), timeout=60) for _ in range(30)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(flood())
    codes = Counter(
        "OK" if isinstance(r, v2.ModelInferResponse) else r.code().name  # type: ignore[attr-defined]
        for r in results
    )
    assert codes["RESOURCE_EXHAUSTED"] > 0 and codes["OK"] > 0
    assert set(codes) == {"OK", "RESOURCE_EXHAUSTED"}
    # The server is unharmed: a request afterwards succeeds.
    with grpc.insecure_channel(small_queue.address) as channel:
        response = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request_of(images[:2]), timeout=10
        )
    assert response.outputs[0].name == "probabilities"


def test_expired_requests_are_not_computed(small_queue: ServerProcess) -> None:
    """Behind a long queue, requests with a short deadline expire and cost the model nothing."""
    images = reference.test_images(4000)

    async def scenario() -> tuple[list[object], int]:
        async with grpc.aio.insecure_channel(small_queue.address) as channel:
            stub = v2_grpc.GRPCInferenceServiceStub(channel)
            before = rows_inferred(stub_sync)
            blocker = stub.ModelInfer(request_of(images), timeout=60)
            while inflight(small_queue, MODEL) < 1:
                await asyncio.sleep(0.005)
            short = [stub.ModelInfer(request_of(images[:10]), timeout=0.5) for _ in range(5)]
            results = await asyncio.gather(*short, return_exceptions=True)
            await blocker
            return results, rows_inferred(stub_sync) - before

    expired_before = gone_before_running(small_queue)
    with grpc.insecure_channel(small_queue.address) as sync_channel:
        stub_sync = v2_grpc.GRPCInferenceServiceStub(sync_channel)
        results, computed = asyncio.run(scenario())
    # They reached the server, which dropped them from its queue.
    assert gone_before_running(small_queue) - expired_before == 5
    assert all(
        isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        for r in results
    ), results
    assert computed == 4000  # the blocker's rows only


# A client process whose 16 callers give up after 1 ms to 1 s (log-uniform), until the file
# `stop` exists (or for at most `seconds`). It calls V2 and the patient clients call digits.v1,
# both on the mlp (one batcher): the `api` label of the server's request counter tells their
# calls apart.
IMPATIENT = """
import asyncio, os, random, sys, time
import grpc, numpy as np
from service._proto.inference import grpc_service_pb2 as v2, grpc_service_pb2_grpc as v2_grpc

async def main(address, stop, seconds):
    request = v2.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 28, 28])
    request.raw_input_contents.append(np.zeros(784, "<f4").tobytes())
    async with grpc.aio.insecure_channel(address) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        end = time.monotonic() + seconds
        async def caller():
            while time.monotonic() < end and not os.path.exists(stop):
                try:
                    await stub.ModelInfer(request, timeout=10 ** random.uniform(-3, 0))
                except grpc.aio.AioRpcError:
                    pass
        await asyncio.gather(*(caller() for _ in range(16)))

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


def test_clients_that_give_up_early_leave_no_traceback_and_harm_no_one(tmp_path: Path) -> None:
    """Deadlines of a few ms under load: many calls are gone before the server answers them. A
    client going away is normal: the log stays clean, and every patient call that reaches a
    handler is answered."""
    server = ServerProcess("--models", "mlp")
    try:
        stop = tmp_path / "stop"
        impatient = subprocess.Popen(
            [sys.executable, "-c", IMPATIENT, server.address, str(stop), "30"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        request = digits_pb2.ClassifyRequest(model="mlp")
        request.images.add().pixels.data.extend(reference.test_images(1).reshape(784).tolist())

        async def patient() -> Counter[str]:
            codes: Counter[str] = Counter()
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = digits_pb2_grpc.DigitsStub(channel)

                async def caller() -> None:
                    while impatient.poll() is None:
                        try:
                            await stub.Classify(request, timeout=30)
                            codes["OK"] += 1
                        except grpc.aio.AioRpcError as err:
                            codes[err.code().name] += 1

                await asyncio.gather(*(caller() for _ in range(16)))
            return codes

        def counted(api: str) -> Counter[str]:
            """The server's request count by code, for one API on the mlp."""
            return Counter(
                {
                    dict(labels)["code"]: int(value)
                    for (name, labels), value in scrape(server).items()
                    if name == "digits_requests_total" and ("api", api) in labels
                }
            )

        def enough() -> bool:
            """Impatient calls reached a handler, and some were gone before it answered."""
            impatients = counted("v2")
            return impatients.total() >= 20 and impatients["DEADLINE_EXCEEDED"] > 0

        async def watch() -> None:
            """Three seconds of load at least, and until `enough`."""
            started = time.monotonic()
            while time.monotonic() - started < 3 or not await asyncio.to_thread(enough):
                if impatient.poll() is not None:
                    return
                await asyncio.sleep(0.25)
            stop.touch()

        async def both() -> Counter[str]:
            return (await asyncio.gather(patient(), watch()))[0]

        codes = asyncio.run(both())
        impatient.communicate(timeout=30)
        assert impatient.returncode == 0
        assert enough()
        # The impatient calls that reached a handler were answered or found gone.
        impatients = counted("v2")
        assert set(impatients) <= {"OK", "DEADLINE_EXCEEDED", "CANCELLED"}, impatients
        # Every patient call that reached a handler was answered.
        assert counted("digits") == Counter(OK=codes["OK"]), codes
        # The others ended CANCELLED inside grpc before any handler ran: a grpc.aio server
        # cancels some new calls on every connection while many calls are being cancelled. A
        # bare grpc.aio server whose handler only returns does it too (4-8% of 500-600 calls
        # on this 2-core machine); grpc's thread-pool server does not. This server sends no such
        # code itself; the bound says that most calls get through.
        assert set(codes) <= {"OK", "CANCELLED"}, codes
        assert codes["CANCELLED"] <= 0.3 * codes.total(), codes
        server.signal()
        assert server.wait(30) == 0
        assert "Traceback" not in server.log
        assert " ERROR " not in server.log
    finally:
        server.kill()
