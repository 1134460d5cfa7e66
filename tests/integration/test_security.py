"""TLS, mutual TLS and bearer tokens against the real server, with real clients."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from digits_client.cli import main as cli_main
from digits_client.client import DigitsClient, DigitsError, Security
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service._proto.digits.v1 import digits_pb2, digits_pb2_grpc
from tests.integration.server import OWN_CONNECTION, ServerProcess, scrape, wait_for

TOKEN_IN_FILE = "file-token-7f3a9c"
TOKEN_IN_FLAG = "flag-token-51be02"


@dataclass
class Issued:
    key: bytes
    cert: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CA:
    """A throwaway certificate authority that signs server and client certificates."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(name)
        self.cert = (
            self._builder(self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def _builder(
        self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def issue(self, common_name: str, *, server: bool) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = self._builder(_name(common_name), key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if server:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(_pem_key(key), cert.public_bytes(serialization.Encoding.PEM))


@dataclass
class Pki:
    ca: CA
    other_ca: CA
    server: Issued
    client: Issued
    untrusted_client: Issued
    files: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca, other_ca = CA("digits test CA"), CA("untrusted CA")
    pki = Pki(
        ca,
        other_ca,
        ca.issue("localhost", server=True),
        ca.issue("client", server=False),
        other_ca.issue("intruder", server=False),
        tmp_path_factory.mktemp("pki"),
    )
    write(pki.files / "server.crt", pki.server.cert)
    write(pki.files / "server.key", pki.server.key)
    write(pki.files / "ca.crt", ca.pem)
    return pki


def write(path: Path, data: bytes) -> None:
    """Replace the file at once, as a Kubernetes secret update does."""
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def tls_args(pki: Pki) -> list[str]:
    return ["--tls-cert", str(pki.files / "server.crt"), "--tls-key", str(pki.files / "server.key")]


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[ServerProcess]:
    """TLS and token auth: one token from a file, one from the flag."""
    tokens = pki.files / "tokens"
    tokens.write_text(f"# the load balancer\n\n{TOKEN_IN_FILE}\n")
    process = ServerProcess(
        *tls_args(pki),
        "--auth-tokens-file",
        str(tokens),
        "--auth-tokens",
        TOKEN_IN_FLAG,
        "--models",
        '["mlp"]',
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def mtls_server(pki: Pki) -> Iterator[ServerProcess]:
    ca = str(pki.files / "ca.crt")
    process = ServerProcess(*tls_args(pki), "--tls-client-ca", ca, "--models", '["mlp"]')
    try:
        yield process
    finally:
        process.stop()


def secure(server: ServerProcess, root: bytes, client: Issued | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=client.key if client else None,
        certificate_chain=client.cert if client else None,
    )
    # A channel of its own: no connection (and no handshake) shared with earlier channels.
    return grpc.secure_channel(server.address, credentials, options=OWN_CONNECTION)


def list_models(channel: grpc.Channel, token: str | None = None) -> digits_pb2.ListModelsResponse:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    stub = digits_pb2_grpc.DigitsStub(channel)
    return stub.ListModels(digits_pb2.ListModelsRequest(), timeout=10, metadata=metadata)


def refused(channel: grpc.Channel, token: str | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught, channel:
        list_models(channel, token)
    return caught.value


def triton(
    server: ServerProcess, pki: Pki, client: Issued | None
) -> grpcclient.InferenceServerClient:
    """tritonclient reads its certificates from files."""
    key = cert = None
    if client is not None:
        key, cert = pki.files / "client.key", pki.files / "client.crt"
        key.write_bytes(client.key)
        cert.write_bytes(client.cert)
    return grpcclient.InferenceServerClient(
        server.address,
        ssl=True,
        root_certificates=str(pki.files / "ca.crt"),
        private_key=str(key) if key else None,
        certificate_chain=str(cert) if cert else None,
    )


def v2_infer(client: grpcclient.InferenceServerClient, token: str | None = None) -> np.ndarray:
    image = grpcclient.InferInput("image", [1, 1, 28, 28], "FP32")
    image.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
    headers = {"authorization": f"Bearer {token}"} if token else None
    result = client.infer("mlp", [image], headers=headers, client_timeout=10)
    probabilities = result.as_numpy("probabilities")
    assert probabilities is not None
    return probabilities


def test_tls_serves_clients_that_trust_its_ca(tls_server: ServerProcess, pki: Pki) -> None:
    with secure(tls_server, pki.ca.pem) as channel:
        assert [m.name for m in list_models(channel, TOKEN_IN_FILE).models] == ["mlp"]
    probabilities = v2_infer(triton(tls_server, pki, None), TOKEN_IN_FLAG)
    assert probabilities.shape == (1, 10)
    assert "TLS on, mutual TLS off, token auth on (2 tokens)" in tls_server.log
    assert TOKEN_IN_FILE not in tls_server.log
    assert TOKEN_IN_FLAG not in tls_server.log


def test_a_plaintext_client_cannot_talk_to_the_tls_port(tls_server: ServerProcess) -> None:
    error = refused(grpc.insecure_channel(tls_server.address), TOKEN_IN_FILE)
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_that_does_not_trust_the_server_fails(tls_server: ServerProcess, pki: Pki) -> None:
    error = refused(secure(tls_server, pki.other_ca.pem), TOKEN_IN_FILE)
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_no_token_answers_unauthenticated(tls_server: ServerProcess, pki: Pki) -> None:
    error = refused(secure(tls_server, pki.ca.pem))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "missing bearer token",
    )
    with pytest.raises(grpcclient.InferenceServerException) as caught:
        v2_infer(triton(tls_server, pki, None))
    assert caught.value.status() == "StatusCode.UNAUTHENTICATED"


def test_a_wrong_token_answers_permission_denied_and_leaks_nothing(
    tls_server: ServerProcess, pki: Pki
) -> None:
    error = refused(secure(tls_server, pki.ca.pem), TOKEN_IN_FILE[:-1])
    assert (error.code(), error.details()) == (grpc.StatusCode.PERMISSION_DENIED, "invalid token")
    for token in (TOKEN_IN_FILE, TOKEN_IN_FLAG):
        assert token not in str(error.details())
        assert token not in str(error.debug_error_string())  # type: ignore[attr-defined]


def test_refused_calls_are_not_counted(tls_server: ServerProcess, pki: Pki) -> None:
    refused(secure(tls_server, pki.ca.pem), "nope")
    codes = {
        dict(labels).get("code")
        for (name, labels) in scrape(tls_server)
        if name == "digits_requests_total"
    }
    assert not codes & {"UNAUTHENTICATED", "PERMISSION_DENIED"}


def test_health_needs_no_token(tls_server: ServerProcess, pki: Pki) -> None:
    with secure(tls_server, pki.ca.pem) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


# ---- the HTTP port: the same certificate, tokens and mutual TLS -------------------------------


def https(
    server: ServerProcess,
    root: bytes,
    path: str,
    token: str | None = None,
    client: Issued | None = None,
) -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context(cadata=root.decode())
    if client is not None:
        with tempfile.TemporaryDirectory() as where:  # ssl loads a chain from files only
            certificate = Path(where) / "client.pem"
            certificate.write_bytes(client.cert + client.key)
            context.load_cert_chain(certificate)
    connection = http.client.HTTPSConnection(
        "127.0.0.1", server.http_port, context=context, timeout=10
    )
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_https_serves_token_holders_and_refuses_the_rest(
    tls_server: ServerProcess, pki: Pki
) -> None:
    status, _, body = https(tls_server, pki.ca.pem, "/v2/models/mlp", TOKEN_IN_FLAG)
    assert status == 200 and json.loads(body)["name"] == "mlp"
    status, headers, body = https(tls_server, pki.ca.pem, "/v2/models/mlp")
    assert (status, json.loads(body)) == (401, {"error": "missing bearer token"})
    assert headers["WWW-Authenticate"] == "Bearer"
    status, _, body = https(tls_server, pki.ca.pem, "/v2/models/mlp", TOKEN_IN_FILE + "x")
    assert (status, json.loads(body)) == (403, {"error": "invalid token"})
    # The probes need no token.
    assert https(tls_server, pki.ca.pem, "/v2/health/ready")[0] == 200
    assert https(tls_server, pki.ca.pem, "/v2/health/live")[0] == 200


def test_the_https_port_refuses_plaintext_and_untrusted_clients(
    tls_server: ServerProcess, pki: Pki
) -> None:
    plain = http.client.HTTPConnection("127.0.0.1", tls_server.http_port, timeout=10)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        plain.request("GET", "/v2/health/live")
        plain.getresponse()
    with pytest.raises(ssl.SSLCertVerificationError):
        https(tls_server, pki.other_ca.pem, "/v2/health/live")


def test_mutual_tls_on_the_http_port(mtls_server: ServerProcess, pki: Pki) -> None:
    assert https(mtls_server, pki.ca.pem, "/v2/models/mlp", client=pki.client)[0] == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https(mtls_server, pki.ca.pem, "/v2/models/mlp")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https(mtls_server, pki.ca.pem, "/v2/models/mlp", client=pki.untrusted_client)


def test_mutual_tls_serves_clients_with_a_certificate_from_its_ca(
    mtls_server: ServerProcess, pki: Pki
) -> None:
    with secure(mtls_server, pki.ca.pem, pki.client) as channel:
        assert [m.name for m in list_models(channel).models] == ["mlp"]
    assert v2_infer(triton(mtls_server, pki, pki.client)).shape == (1, 10)
    assert "TLS on, mutual TLS on, token auth off" in mtls_server.log


def test_mutual_tls_refuses_a_client_without_a_certificate(
    mtls_server: ServerProcess, pki: Pki
) -> None:
    error = refused(secure(mtls_server, pki.ca.pem))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_refuses_a_certificate_from_another_ca(
    mtls_server: ServerProcess, pki: Pki
) -> None:
    error = refused(secure(mtls_server, pki.ca.pem, pki.untrusted_client))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_a_rotated_server_certificate_is_served_without_a_restart(pki: Pki) -> None:
    files = pki.files / "rotating"
    files.mkdir()
    write(files / "server.crt", pki.server.cert)
    write(files / "server.key", pki.server.key)
    args = ["--tls-cert", str(files / "server.crt"), "--tls-key", str(files / "server.key")]
    with ServerProcess(*args, "--models", '["mlp"]') as server:
        assert isinstance(server, ServerProcess)
        with secure(server, pki.ca.pem) as channel:
            list_models(channel)
        rotated = pki.other_ca.issue("localhost", server=True)
        write(files / "server.key", rotated.key)
        write(files / "server.crt", rotated.cert)
        with secure(server, pki.other_ca.pem) as channel:
            assert [m.name for m in list_models(channel).models] == ["mlp"]
        error = refused(secure(server, pki.ca.pem))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        wait_for(lambda: "TLS certificate files changed: reloaded" in server.log)
        # The HTTP port serves the new certificate too.
        assert https(server, pki.other_ca.pem, "/v2/health/live")[0] == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            https(server, pki.ca.pem, "/v2/health/live")


def test_python_client_and_cli_speak_tls_and_tokens(
    tls_server: ServerProcess,
    mtls_server: ServerProcess,
    pki: Pki,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ca = pki.files / "ca.crt"
    write(pki.files / "client.crt", pki.client.cert)
    write(pki.files / "client.key", pki.client.key)
    security = Security(tls_ca=ca, token=TOKEN_IN_FILE)
    with DigitsClient(tls_server.address, security=security) as client:
        assert [m.name for m in client.models()] == ["mlp"]
    with DigitsClient(tls_server.address, security=Security(tls_ca=ca)) as client:
        with pytest.raises(DigitsError) as err:
            client.models()
        assert err.value.code == "UNAUTHENTICATED"

    common = ["--target", tls_server.address, "--tls-ca", str(ca)]
    assert cli_main([*common, "--token", TOKEN_IN_FLAG, "models"]) == 0
    assert "mlp" in capsys.readouterr().out
    assert cli_main([*common, "--token", "nope", "models"]) == 1
    assert "PERMISSION_DENIED: invalid token" in capsys.readouterr().err
    mutual = ["--target", mtls_server.address, "--tls-ca", str(ca)]
    client_files = [
        "--tls-cert",
        str(pki.files / "client.crt"),
        "--tls-key",
        str(pki.files / "client.key"),
    ]
    assert cli_main([*mutual, *client_files, "health"]) == 0
    assert cli_main([*mutual, "--tls-cert", "/no/such.crt", "health"]) == 2
