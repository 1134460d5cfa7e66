"""deploy/kserve/: the ClusterServingRuntime and InferenceServices, checked offline against
KServe's CRD schemas (pruned to what the manifests touch: kserve_schemas.json, made by
scripts/validate_kserve.py), the container against Kubernetes' schemas and its environment
against the server's settings, and the InferenceServices against what the runtime offers. With
KSERVE_CRDS naming a directory of KServe's full CRDs, those are used too."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.deploy.chart import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import validate_kserve

KSERVE = ROOT / "deploy" / "kserve"
PRUNED = Path(__file__).with_name("kserve_schemas.json")
# The protocol versions KServe's InferenceService takes (its protocolVersion field).
PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}


def load(name: str) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((KSERVE / name).read_text())
    return manifest


def container() -> dict[str, Any]:
    (only,) = load("servingruntime.yaml")["spec"]["containers"]
    return dict(only)


def environment() -> dict[str, str]:
    return {item["name"]: item["value"] for item in container()["env"]}


@pytest.mark.parametrize("version", ["1.30.0", kubernetes_validate.utils.latest_version()])
def test_the_runtime_container_is_a_valid_kubernetes_container(version: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "digits-serving"},
        "spec": {"containers": [container()]},
    }
    kubernetes_validate.validate(pod, version, strict=True)


def test_its_environment_is_what_the_server_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in environment().items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.model_store == Path("/mnt/models")  # where KServe puts storageUri
    assert (settings.http_port, settings.grpc_port, settings.metrics_port) == (8080, 9000, 8002)
    assert settings.allow_http
    ports = {p["containerPort"] for p in container()["ports"]}
    assert ports == {settings.http_port}
    probe = container()["readinessProbe"]["httpGet"]
    assert probe == {"path": "/v2/health/ready", "port": settings.http_port}
    annotations = load("servingruntime.yaml")["spec"]["annotations"]
    assert annotations["prometheus.kserve.io/port"] == str(settings.metrics_port)


def test_the_runtime_speaks_v2_over_http_and_grpc() -> None:
    spec = load("servingruntime.yaml")["spec"]
    assert set(spec["protocolVersions"]) == {"v2", "grpc-v2"} <= PROTOCOLS
    assert container()["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("name", ["inferenceservice.yaml", "inferenceservice-grpc.yaml"])
def test_inference_services_ask_for_what_the_runtime_offers(name: str) -> None:
    runtime = load("servingruntime.yaml")
    model = load(name)["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    offered = {(f["name"], f["version"]) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) in offered
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    if model["protocolVersion"].startswith("grpc"):
        (port,) = model["ports"]
        assert port["name"] == "h2c"  # KServe's name for an HTTP/2 cleartext port
        assert port["containerPort"] == int(environment()["DIGITS_GRPC_PORT"])


def test_every_manifest_validates_against_kserve_schemas() -> None:
    lines = validate_kserve.validate(schemas_file=PRUNED)
    assert len(lines) == 3 and all(line.startswith("ok") for line in lines), lines


def test_a_misspelt_or_mistyped_field_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = validate_kserve.manifests

    def altered() -> Any:
        for path, manifest in real():
            if manifest["kind"] == "InferenceService":
                model = manifest["spec"]["predictor"]["model"]
                model["storageURI"] = model.pop("storageUri")
                model["runtime"] = 7
            yield path, manifest

    monkeypatch.setattr(validate_kserve, "manifests", altered)
    failed = [line for line in validate_kserve.validate(schemas_file=PRUNED) if "FAIL" in line]
    assert len(failed) == 2 and all("spec.predictor.model" in line for line in failed), failed


def test_the_validator_refuses_unknown_fields(tmp_path: Path) -> None:
    """The strict schema: a misspelt field is an error, not dropped (a CRD-shaped schema)."""
    schema = validate_kserve.strict(
        {"type": "object", "properties": {"spec": {"properties": {"storageUri": {}}}}}
    )
    assert schema["additionalProperties"] is False
    assert schema["properties"]["spec"]["additionalProperties"] is False


@pytest.mark.skipif(
    not os.environ.get("KSERVE_CRDS"),
    reason="set KSERVE_CRDS to a KServe checkout's config/crd/full to validate against its CRDs",
)
def test_every_manifest_validates_against_kserve_crds() -> None:
    crds = Path(os.environ["KSERVE_CRDS"])
    lines = validate_kserve.validate(crds)
    assert lines and not [line for line in lines if line.startswith("FAIL")], lines
    pruned = json.loads(PRUNED.read_text())["schemas"]
    assert pruned == json.loads(json.dumps(validate_kserve.pruned_schemas(crds)))
