"""The Helm chart: lint, render every value set, validate against the Kubernetes schemas
offline, and assert what operators rely on (probes, ports, security, GPUs, scaling)."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.metrics import Metrics
from service.settings import GPU_DEFAULTS, Settings
from tests.deploy.chart import (
    CHART,
    RELEASE,
    ROOT,
    VALUE_SETS,
    Manifest,
    env,
    helm,
    helm_test_pod,
    kinds,
    one,
    render,
    server_container,
    server_pod,
    template,
    values_args,
)

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas
# kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
# Custom resources: no bundled schema; checked by the assertions below instead.
CUSTOM_KINDS = {"ServiceMonitor"}


def validate(manifest: Manifest, version: str) -> None:
    kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_strict_passes(value_set: str) -> None:
    result = helm("lint", "--strict", str(CHART), *values_args(value_set))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_object_is_valid_for_kubernetes(value_set: str, version: str) -> None:
    for manifest in render(value_set):
        if manifest["kind"] in CUSTOM_KINDS:
            continue
        try:
            validate(manifest, version)
        except kubernetes_validate.ValidationError as error:
            name = f"{manifest['kind']}/{manifest['metadata']['name']}"
            pytest.fail(f"{value_set}: {name} invalid for {version}: {error.message}")


def test_schema_validation_is_strict_and_offline() -> None:
    deployment = json.loads(json.dumps(one(render(), "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, KUBERNETES_VERSIONS[0])


def test_rendered_objects_per_value_set() -> None:
    base = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Pod", "PodDisruptionBudget"]
    base += ["Service", "ServiceAccount"]
    assert kinds(render("default")) == sorted(base)
    assert kinds(render("gpu")) == sorted(base)
    monitoring = [*base, "ConfigMap", "NetworkPolicy", "Service", "ServiceMonitor"]
    assert kinds(render("monitoring")) == sorted(monitoring)
    pvc = [k for k in base if k != "HorizontalPodAutoscaler"] + ["PersistentVolumeClaim"]
    assert kinds(render("pvc")) == sorted(pvc)


def test_chart_versions_follow_the_project() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    assert server_container(render())["image"] == f"digits-serving:{project['version']}"
    too_old = template("--kube-version", "1.29.0")
    assert too_old.returncode != 0 and "kubeVersion" in too_old.stderr


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_probes_ask_grpc_health_on_the_grpc_port(value_set: str) -> None:
    container = server_container(render(value_set))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": 8001, "service": ""}, probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, "time to load models"


def test_readiness_can_follow_one_model() -> None:
    container = server_container(render(extra=["--set", "probes.readiness.service=convnet"]))
    assert container["readinessProbe"]["grpc"] == {"port": 8001, "service": "convnet"}


def test_probes_can_ask_the_kserve_health_routes_over_http() -> None:
    extra = ["--set", "probes.protocol=http", "--set", "probes.readiness.service=convnet"]
    container = server_container(render(extra=extra))
    paths = {probe: container[probe]["httpGet"] for probe in ("startupProbe", "livenessProbe")}
    assert paths == {
        "startupProbe": {"port": "http", "path": "/v2/health/live"},
        "livenessProbe": {"port": "http", "path": "/v2/health/live"},
    }
    ready = container["readinessProbe"]["httpGet"]
    assert ready == {"port": "http", "path": "/v2/models/convnet/ready"}
    whole = server_container(render(extra=["--set", "probes.protocol=http"]))
    assert whole["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_ports_http_8000_grpc_8001_and_metrics_8002(value_set: str) -> None:
    manifests = render(value_set)
    container = server_container(manifests)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert env(container)["DIGITS_HTTP_PORT"] == "8000"
    service = one(manifests, "Service", "serving")
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert by_name["grpc"] == {
        "name": "grpc",
        "port": 8001,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "grpc",
    }
    assert (by_name["metrics"]["port"], by_name["metrics"]["targetPort"]) == (8002, "metrics")
    assert by_name["http"] == {
        "name": "http",
        "port": 8000,
        "targetPort": "http",
        "protocol": "TCP",
        "appProtocol": "http",
    }
    assert (
        service["spec"]["selector"]
        == one(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    )


def assert_locked_down(pod_spec: dict[str, Any]) -> None:
    assert pod_spec["automountServiceAccountToken"] is False
    pod = pod_spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_pods_are_non_root_read_only_and_unprivileged(value_set: str) -> None:
    manifests = render(value_set)
    assert_locked_down(server_pod(manifests)["spec"])
    assert_locked_down(helm_test_pod(manifests)["spec"])
    mounts = {m["mountPath"]: m for m in server_container(manifests)["volumeMounts"]}
    assert "/tmp" in mounts, "a writable /tmp under the read-only root"
    account = one(manifests, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert server_pod(manifests)["spec"]["serviceAccountName"] == account["metadata"]["name"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_termination_outlasts_prestop_and_drain(value_set: str) -> None:
    manifests = render(value_set)
    pod = server_pod(manifests)["spec"]
    container = server_container(manifests)
    drain = float(env(container)["DIGITS_GRACE_PERIOD_S"])
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        sleep = pre_stop["sleep"]["seconds"]
    else:  # exec mode: python, since the image promises no shell
        command = pre_stop["exec"]["command"]
        assert command[:2] == ["python", "-c"]
        sleep = int(command[2].removeprefix("import time; time.sleep(").removesuffix(")"))
    assert sleep >= 5, "endpoints update before the server refuses work"
    assert pod["terminationGracePeriodSeconds"] > sleep + math.ceil(drain)
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > drain


def test_prestop_sleep_is_native_by_default() -> None:
    assert server_container(render())["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    assert server_pod(render())["spec"]["terminationGracePeriodSeconds"] == 5 + 10 + 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "terminationGracePeriodSeconds=12"], "must be longer than"),
        (["--set", "settings.gracePeriodS=40"], "probes.liveness.periodSeconds"),
        (["--set", "autoscaling.targetCPUUtilizationPercentage=null"], "needs a metric"),
        (["--set", "autoscaling.minReplicas=5", "--set", "autoscaling.maxReplicas=2"], "exceed"),
        (
            ["--set", "settings.modelControlMode=explicit", "--set", "settings.workers=2"],
            "needs settings.workers 1",
        ),
        (
            ["--set", "probes.protocol=http", "--set", "settings.allowHttp=false"],
            "needs settings.allowHttp",
        ),
    ],
)
def test_inconsistent_values_fail_rendering(args: list[str], message: str) -> None:
    result = template(*args)
    assert result.returncode != 0
    assert message in result.stderr


def test_http_off_leaves_out_its_port_everywhere() -> None:
    manifests = render("monitoring", extra=["--set", "settings.allowHttp=false"])
    container = server_container(manifests)
    assert [p["name"] for p in container["ports"]] == ["grpc", "metrics"]
    assert env(container)["DIGITS_ALLOW_HTTP"] == "false"
    service = one(manifests, "Service", "serving")
    assert [p["name"] for p in service["spec"]["ports"]] == ["grpc", "metrics"]
    grpc, _ = one(manifests, "NetworkPolicy")["spec"]["ingress"]
    assert grpc["ports"] == [{"port": "grpc", "protocol": "TCP"}]


def test_settings_become_digits_environment() -> None:
    variables = env(server_container(render()))
    assert variables["DIGITS_MODEL_STORE"] == "/app/model_store"
    assert (variables["DIGITS_GRPC_PORT"], variables["DIGITS_METRICS_PORT"]) == ("8001", "8002")
    # Large integers stay integers (Helm reads them as floats) and lists are JSON.
    assert variables["DIGITS_MAX_MESSAGE_BYTES"] == "33554432"
    assert variables["DIGITS_MAX_IMAGE_PIXELS"] == "16000000"
    assert variables["DIGITS_MAX_QUEUE_DELAY_US"] == "0"
    assert variables["DIGITS_WARMUP"] == "true"
    assert variables["DIGITS_DEVICE"] == "auto"
    pvc = env(server_container(render("pvc")))
    assert pvc["DIGITS_MODELS"] == '["convnet"]'
    assert pvc["DIGITS_GRACE_PERIOD_S"] == "30"
    half = env(server_container(render(extra=["--set-json", "settings.gracePeriodS=2.5"])))
    assert half["DIGITS_GRACE_PERIOD_S"] == "2.5"
    assert variables["DIGITS_WORKERS"] == "1"
    two = env(server_container(render(extra=["--set-json", "settings.workers=2"])))
    assert two["DIGITS_WORKERS"] == "2"
    assert variables["DIGITS_MODEL_CONTROL_MODE"] == "none"
    polled = [
        "--set",
        "settings.modelControlMode=poll",
        "--set-json",
        "settings.repositoryPollSecs=5",
    ]
    poll = env(server_container(render("pvc", extra=polled)))
    assert (poll["DIGITS_MODEL_CONTROL_MODE"], poll["DIGITS_REPOSITORY_POLL_SECS"]) == ("poll", "5")


def test_environment_is_what_the_server_accepts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mounted = tmp_path / "mounted-secret"  # stands in for a file the pod mounts
    mounted.write_text("a-token\n")
    for value_set in VALUE_SETS:
        for name, value in env(server_container(render(value_set))).items():
            monkeypatch.setenv(name, str(mounted) if name.endswith("_FILE") else value)
        settings = Settings()
        assert settings.grpc_port == 8001
        monkeypatch.undo()
    assert Settings.model_fields["max_message_bytes"].default == 33554432


def test_default_has_no_gpu() -> None:
    manifests = render()
    pod = server_pod(manifests)["spec"]
    assert "runtimeClassName" not in pod
    assert "nvidia.com/gpu" not in server_container(manifests)["resources"]["limits"]
    assert "tolerations" not in pod


def test_gpu_values_request_gpus_on_the_nvidia_runtime() -> None:
    manifests = render("gpu")
    pod = server_pod(manifests)["spec"]
    container = server_container(manifests)
    assert pod["runtimeClassName"] == "nvidia"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-gpu")
    assert env(container)["DIGITS_DEVICE"] == "cuda"
    # The chart passes every setting, so the GPU values give the server's GPU batching defaults.
    assert env(container)["DIGITS_MAX_BATCH_SIZE"] == str(GPU_DEFAULTS["max_batch_size"])
    assert env(container)["DIGITS_MAX_QUEUE_DELAY_US"] == str(GPU_DEFAULTS["max_queue_delay_us"])
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    # The helm test pod is a client: no GPU.
    for test_container in helm_test_pod(manifests)["spec"]["containers"]:
        assert "nvidia.com/gpu" not in json.dumps(test_container["resources"])


def test_hpa_scales_on_cpu_by_default_and_on_queue_time_when_asked() -> None:
    hpa = one(render(), "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(render(), "Deployment")["metadata"]["name"]
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        }
    ]
    assert "replicas" not in one(render(), "Deployment")["spec"], "the HPA owns the count"
    metrics = one(render("monitoring"), "HorizontalPodAutoscaler")["spec"]["metrics"]
    queue = next(m for m in metrics if m["type"] == "Pods")["pods"]
    assert queue["metric"]["name"] == "digits_queue_duration_seconds_p95"
    assert queue["target"] == {"type": "AverageValue", "averageValue": "20m"}
    assert one(render("pvc"), "Deployment")["spec"]["replicas"] == 3


def test_pdb_selects_the_servers() -> None:
    pdb = one(render(), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["selector"] == one(render(), "Deployment")["spec"]["selector"]
    assert one(render("pvc"), "PodDisruptionBudget")["spec"]["minAvailable"] == 2


def test_models_come_from_the_image_or_a_read_only_volume() -> None:
    assert "models" not in json.dumps(server_pod(render())["spec"]["volumes"])
    manifests = render("pvc")
    pod = server_pod(manifests)["spec"]
    claim = one(manifests, "PersistentVolumeClaim")
    [volume] = [v for v in pod["volumes"] if v["name"] == "models"]
    assert volume["persistentVolumeClaim"] == {
        "claimName": claim["metadata"]["name"],
        "readOnly": True,
    }
    [mount] = [m for m in server_container(manifests)["volumeMounts"] if m["name"] == "models"]
    assert mount == {
        "name": "models",
        "mountPath": "/models",
        "readOnly": True,
        "subPath": "model_store",
    }
    assert env(server_container(manifests))["DIGITS_MODEL_STORE"] == "/models"
    existing = render("pvc", ["--set", "models.pvc.existingClaim=shared-models"])
    assert "PersistentVolumeClaim" not in kinds(existing)
    assert "shared-models" in json.dumps(server_pod(existing)["spec"]["volumes"])


def test_service_monitor_scrapes_the_metrics_port() -> None:
    monitor = one(render("monitoring"), "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "10s", "scrapeTimeout": "10s"}
    ]
    service = one(render("monitoring"), "Service", "serving")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


def test_dashboard_shows_latency_throughput_batch_size_and_queue_time() -> None:
    config_map = one(render("monitoring"), "ConfigMap", "-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["digits-serving.json"])
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("latency", "throughput", "batch size", "queue time"):
        assert topic in titles
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert any("histogram_quantile(0.99" in e and "request_duration" in e for e in exprs)
    # Every series a query names is one the server exports.
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    exported = {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes[family.type]
    }
    for expr in exprs:
        for word in expr.replace("(", " ").replace("{", " ").split():
            if word.startswith("digits_"):
                assert word in exported, word


def test_network_policy_lets_in_clients_monitoring_and_the_helm_test() -> None:
    manifests = render("monitoring")
    policy = one(manifests, "NetworkPolicy")
    grpc, metrics = policy["spec"]["ingress"]
    assert grpc["ports"] == [
        {"port": "grpc", "protocol": "TCP"},
        {"port": "http", "protocol": "TCP"},
    ]
    test_labels = helm_test_pod(manifests)["metadata"]["labels"]
    assert any(
        peer.get("podSelector", {}).get("matchLabels", {}).items() <= test_labels.items()
        for peer in grpc["from"]
    )
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    headless = one(manifests, "Service", "-headless")
    assert headless["spec"]["clusterIP"] == "None"


def test_scheduling_values_reach_the_pod() -> None:
    extra = [
        "--set", "nodeSelector.pool=inference",
        "--set", "tolerations[0].key=dedicated,tolerations[0].operator=Exists",
        "--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions[0].key=zone",
        "--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        "--set", "priorityClassName=inference",
    ]  # fmt: skip
    manifests = render(extra=extra)
    pod = server_pod(manifests)["spec"]
    assert pod["nodeSelector"] == {"pool": "inference"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert "nodeAffinity" in pod["affinity"]
    assert pod["priorityClassName"] == "inference"
    [spread] = pod["topologySpreadConstraints"]
    selector = one(manifests, "Deployment")["spec"]["selector"]
    assert spread["labelSelector"] == selector
    for version in KUBERNETES_VERSIONS:
        validate(one(manifests, "Deployment"), version)


def test_helm_test_pod_checks_health_then_classifies_a_seven() -> None:
    manifests = render()
    pod = helm_test_pod(manifests)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    deployment = one(manifests, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= pod["metadata"]["labels"].items(), "not adoptable"
    target = f"{deployment['metadata']['name']}.serving.svc:8001"
    [health] = pod["spec"]["initContainers"]
    assert health["command"] == ["digits", "--target", target, "--timeout", "10", "health"]
    [classify] = pod["spec"]["containers"]
    assert classify["command"] == ["python", "/helm-test/helm-test.py"]
    assert env(classify)["DIGITS_TARGET"] == target
    files = one(manifests, "ConfigMap", "-test")
    assert files["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert files["data"]["helm-test.py"] == (CHART / "files" / "helm-test.py").read_text().rstrip()
    assert "seven.png" in files["binaryData"]


def test_notes_say_how_to_call_it() -> None:
    result = helm("install", RELEASE, str(CHART), "--namespace", "serving", "--dry-run=client")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "digits-serving.serving.svc:8001" in notes
    assert "port-forward service/digits-serving" in notes
    assert "helm test digits-serving --namespace serving" in notes


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--set", "settings.maxBatchSize=many"], "/settings/maxBatchSize"),
        (["--set", "settings.maxBatchSize=0"], "/settings/maxBatchSize"),
        (["--set", "settings.maxBatchSze=8"], "maxBatchSze"),
        (["--set", "replicas=3"], "replicas"),
        (["--set", "gpu.enabled=yes"], "/gpu/enabled"),
        (["--set", "gpu.count=0"], "/gpu/count"),
        (["--set", "settings.device=tpu"], "/settings/device"),
        (["--set", "models.source=s3"], "/models/source"),
        (["--set", "lifecycle.preStopMode=shell"], "/lifecycle/preStopMode"),
        (["--set", "service.grpcPort=70000"], "/service/grpcPort"),
        (["--set", "autoscaling.queueTime.enabled=true,autoscaling.queueTime.extra=1"], "extra"),
        (["--set", "podDisruptionBudget.maxUnavailable=half"], "/podDisruptionBudget"),
        (["--set-json", 'settings.models="convnet"'], "/settings/models"),
    ],
)
def test_schema_rejects_wrong_types_and_unknown_keys(args: list[str], complaint: str) -> None:
    result = template(*args)
    assert result.returncode != 0, f"{args} was accepted"
    assert "schema" in result.stderr.lower() or "at '" in result.stderr
    assert complaint in result.stderr, result.stderr


def test_readme_documents_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| `")]
    documented = " ".join(line.split(" | ")[0] for line in table)
    for key, value in values.items():
        assert f"`{key}" in documented or f"{key}`" in documented, key
        if key in {"settings", "models", "gpu", "service", "autoscaling", "metrics"}:
            for sub in value:
                assert f"`{key}.{sub}" in documented, f"{key}.{sub}"


def test_token_auth_mounts_the_secret_for_the_server_and_the_helm_test() -> None:
    manifests = render("auth")
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    server = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["DIGITS_AUTH_TOKENS_FILE"] == "/etc/digits/auth/tokens"
    assert {"name": "auth", "mountPath": "/etc/digits/auth", "readOnly": True} in server[
        "volumeMounts"
    ]
    volume = next(v for v in pod["volumes"] if v["name"] == "auth")
    assert volume["secret"]["secretName"] == "digits-tokens"
    test_pod = next(m for m in manifests if m["kind"] == "Pod")
    classify = next(c for c in test_pod["spec"]["containers"] if c["name"] == "classify")
    assert {"name": "DIGITS_TOKEN_FILE", "value": "/etc/digits/auth/tokens"} in classify["env"]
    # Health stays open: the probes are unchanged gRPC health checks.
    assert "grpc" in server["readinessProbe"] and "grpc" in server["livenessProbe"]
    assert "DIGITS_AUTH_TOKENS_FILE" not in {
        e["name"]
        for e in one(render(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
