"""`--grpc-accept-loops N`: N gRPC servers in one process listen on the one port, each serving
every service; the port stays exclusive to this process, and a limit on calls means one."""

from __future__ import annotations

import socket
import subprocess
import sys

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service._proto.digits.v1 import digits_pb2, digits_pb2_grpc
from service._proto.inference import grpc_service_pb2 as v2
from service._proto.inference import grpc_service_pb2_grpc as v2_grpc
from tests.integration import reference
from tests.integration.server import OWN_CONNECTION, ROOT, ServerProcess

TCP_LISTEN = "0A"  # the state column of /proc/net/tcp


def listeners(port: int) -> int:
    """Sockets listening on `port`, any address, as the kernel lists them."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                local, state = row.split()[1], row.split()[3]
                count += state == TCP_LISTEN and int(local.rsplit(":", 1)[1], 16) == port
    return count


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def three_loops() -> ServerProcess:
    server = ServerProcess("--grpc-accept-loops", "3", "--models", "mlp")
    yield server  # type: ignore[misc]
    server.stop()


def test_each_accept_loop_listens_and_every_connection_gets_every_service(
    three_loops: ServerProcess,
) -> None:
    assert listeners(three_loops.grpc_port) == 3
    images = reference.test_images(12)
    expected = reference.run("mlp", images, ["probabilities"])["probabilities"]
    # The kernel picks a listener per connection: 12 of them reach each of 3 with odds > 99%.
    for i in range(12):
        with grpc.insecure_channel(three_loops.address, options=OWN_CONNECTION) as channel:
            request = v2.ModelInferRequest(model_name="mlp")
            request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 28, 28])
            request.raw_input_contents.append(images[i : i + 1].tobytes())
            response = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
            got = np.frombuffer(response.raw_output_contents[0], "<f4")
            np.testing.assert_allclose(got, expected[i], atol=1e-6)
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="mlp"), timeout=10
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            models = digits_pb2_grpc.DigitsStub(channel).ListModels(
                digits_pb2.ListModelsRequest(), timeout=10
            )
            assert [m.name for m in models.models] == ["mlp"]


def test_a_limit_on_concurrent_calls_keeps_one_server() -> None:
    server = ServerProcess("--max-concurrent-rpcs", "8", "--models", "mlp")
    try:
        assert listeners(server.grpc_port) == 1
    finally:
        server.stop()


def test_a_second_server_on_the_same_port_fails_instead_of_sharing_it(
    three_loops: ServerProcess,
) -> None:
    """The accept loops share the port with SO_REUSEPORT, which would let another process that
    sets it too (our own server, started twice) join in silently."""
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--http-port", "0"]
    command += ["--metrics-port", "0", "--models", "mlp", "--no-warmup"]
    second = subprocess.run(
        [*command, "--grpc-port", str(three_loops.grpc_port)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert second.returncode != 0
    assert f"could not bind gRPC to 127.0.0.1:{three_loops.grpc_port}" in second.stderr
    assert "Traceback" not in second.stderr
    assert listeners(three_loops.grpc_port) == 3


def test_a_fixed_free_port_is_taken_by_every_loop() -> None:
    port = free_port()
    server = ServerProcess("--grpc-port", str(port), "--models", "mlp")
    try:
        assert server.grpc_port == port
        assert listeners(port) == 4  # the default
    finally:
        server.stop()
