"""The Helm chart in ``deploy/helm/ipfvr``, linted and rendered by Helm's own engine (``helm-python-sdk``, offline).

``helm lint --strict`` must find nothing above "info"; ``helm template`` output is parsed as YAML and
checked object by object: kinds, images, GPU resources, tolerations and node selectors of the restore
workers, KEDA triggers, the external and the bundled Redis/S3, and the settings every pod reads,
which must be valid :class:`~jobs.settings.Settings` (the same validation the pods run at start).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python import HelmRenderError
from helm_python.chart import Chart, lint

from jobs.settings import Settings

CHART = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "ipfvr"
SECRET = {"secretKey": {"value": "k" * 40}}
WARNING = 2  # lint severities: 1 info, 2 warning, 3 error
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """``helm template rel deploy/helm/ipfvr`` with ``values``: every object, in file order."""
    manifests = Chart.load(CHART).render(values, name="rel", namespace="ipfvr")
    return [
        doc
        for name, text in sorted(manifests.items())
        if name.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def settings_of(objects: list[dict[str, Any]], deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a container of ``deployment`` starts with: its ConfigMap, Secret and env, as the pod sees them."""
    c = container(deployment)
    maps, secrets = by_kind(objects, "ConfigMap"), by_kind(objects, "Secret")
    env: dict[str, str] = {}
    for source in c["envFrom"]:
        if "configMapRef" in source:
            env |= maps[source["configMapRef"]["name"]]["data"]
        else:
            env |= secrets[source["secretRef"]["name"]]["stringData"]
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]]["stringData"][ref["key"]]
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"IPFVR_{name.upper()}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return Settings()


def test_the_chart_lints_clean() -> None:
    for values in (SECRET, SECRET | {"redis": {"enabled": True}, "minio": {"enabled": True, "rootPassword": "p" * 12}}):
        report = lint(CHART, values, strict=True, with_subcharts=True)
        assert report["errors"] == [], report
        assert [m for m in report["messages"] if m["severity"] >= WARNING] == [], report


def test_the_default_release(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(SECRET)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == [
        ("ConfigMap", "rel-ipfvr-config"),
        ("Deployment", "rel-ipfvr-api"),
        ("Deployment", "rel-ipfvr-beat"),
        ("Deployment", "rel-ipfvr-service-worker"),
        ("Deployment", "rel-ipfvr-worker-reference"),
        ("ScaledObject", "rel-ipfvr-worker-reference"),
        ("Secret", "rel-ipfvr-secrets"),
        ("Service", "rel-ipfvr-api"),
    ]
    deployments = by_kind(objects, "Deployment")
    for name in ("api", "beat", "service-worker"):
        assert container(deployments[f"rel-ipfvr-{name}"])["image"] == "ghcr.io/example/ipfvr-api:0.1.0"
    api = deployments["rel-ipfvr-api"]
    assert api["spec"]["replicas"] == 2
    assert container(api)["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = by_kind(objects, "Service")["rel-ipfvr-api"]
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    assert api["spec"]["selector"]["matchLabels"].items() <= api["spec"]["template"]["metadata"]["labels"].items()

    worker = deployments["rel-ipfvr-worker-reference"]
    pod = worker["spec"]["template"]["spec"]
    assert "replicas" not in worker["spec"]  # KEDA owns it
    assert container(worker)["image"] == "ghcr.io/example/ipfvr-worker:0.1.0"
    assert container(worker)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container(worker)["resources"]["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [GPU_TOLERATION]
    assert pod["terminationGracePeriodSeconds"] > 3600
    assert "restore.reference,train.reference" in container(worker)["command"]

    (trigger,) = by_kind(objects, "ScaledObject")["rel-ipfvr-worker-reference"]["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metadata"]["threshold"] == "1"
    assert trigger["metadata"]["query"] == (
        'max(ipfvr_queue_waiting_jobs{queue="restore.reference"}) '
        '+ max(ipfvr_queue_active_jobs{queue="restore.reference"})'
    )

    settings = settings_of(objects, worker, monkeypatch)
    assert settings.env == "production" and settings.worker_engine == "reference" and settings.device == "cuda"
    assert settings.redis_url == "redis://redis.example.internal:6379/0"
    assert settings.queue_for(settings.worker_engine) == "restore.reference"
    assert settings_of(objects, api, monkeypatch).engines == ["reference", "baseline", "ipfvr"]


def test_every_command_the_chart_runs_exists() -> None:
    objects = render(SECRET)
    modules = set()
    for deployment in by_kind(objects, "Deployment").values():
        command = container(deployment)["command"]
        modules.add(command[command.index("-A") + 1] if "-A" in command else command[2].split(":")[0])
        for probe in ("startupProbe", "readinessProbe"):
            if "exec" in container(deployment).get(probe, {}):
                modules.add(container(deployment)[probe]["exec"]["command"][2])
    assert modules == {"api.main", "worker.celery_app", "worker.restore_worker", "worker.health"}
    for module in modules:
        assert importlib.util.find_spec(module) is not None, module


def test_engines_keda_off_and_an_existing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "secretKey": {"existingSecret": "ipfvr-keys"},
        "s3": {"existingSecret": "ipfvr-s3"},
        "keda": {"enabled": False},
        "restoreWorkers": {
            "ipfvr": {
                "enabled": True,
                "replicas": 3,
                "tolerations": [GPU_TOLERATION, {"key": "a100", "operator": "Exists"}],
                "nodeSelector": {"gpu": "a100"},
                "volumes": [{"name": "weights", "persistentVolumeClaim": {"claimName": "ipfvr-weights"}}],
                "volumeMounts": [{"name": "weights", "mountPath": "/models/ipfvr", "readOnly": True}],
            }
        },
    }
    objects = render(values)
    assert by_kind(objects, "ScaledObject") == {} and by_kind(objects, "Secret") == {}
    deployments = by_kind(objects, "Deployment")
    ipfvr = deployments["rel-ipfvr-worker-ipfvr"]
    assert ipfvr["spec"]["replicas"] == 3 and deployments["rel-ipfvr-worker-reference"]["spec"]["replicas"] == 1
    pod = ipfvr["spec"]["template"]["spec"]
    # maps merge into the shared restoreWorker values, lists replace theirs
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true", "gpu": "a100"} and len(pod["tolerations"]) == 2
    assert {"name": "IPFVR_WEIGHTS_DIR", "value": "/models/ipfvr"} in container(ipfvr)["env"]
    assert {"name": "weights", "mountPath": "/models/ipfvr", "readOnly": True} in container(ipfvr)["volumeMounts"]
    assert container(ipfvr)["resources"]["limits"]["nvidia.com/gpu"] == 1  # the shared defaults still apply
    assert container(ipfvr)["envFrom"][1:] == [
        {"secretRef": {"name": "ipfvr-keys"}},
        {"secretRef": {"name": "ipfvr-s3"}},
    ]


def test_bundled_redis_and_minio(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(SECRET | {"redis": {"enabled": True}, "minio": {"enabled": True, "rootPassword": "p" * 12}})
    deployments = by_kind(objects, "Deployment")
    assert {"rel-redis", "rel-minio"} <= set(deployments)
    assert {"rel-redis", "rel-minio"} <= set(by_kind(objects, "Service"))
    assert "rel-minio" in by_kind(objects, "PersistentVolumeClaim")
    settings = settings_of(objects, deployments["rel-ipfvr-worker-reference"], monkeypatch)
    assert settings.redis_url == "redis://rel-redis:6379/0"
    assert str(settings.s3_endpoint_url) == "http://rel-minio:9000/" and settings.s3_addressing_style == "path"
    assert settings.s3_create_bucket and settings.s3_access_key_id is not None
    assert settings.s3_secret_access_key.get_secret_value() == "p" * 12


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "secretKey.value (32+ characters) or secretKey.existingSecret is required"),
        (SECRET | {"restoreWorkers": {"mine": {"enabled": True}}}, "restoreWorkers.mine is enabled but mine is not in"),
        (SECRET | {"minio": {"enabled": True}}, "minio.rootPassword is required"),
    ],
)
def test_bad_values_are_refused_with_their_name(values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmRenderError, match=re.escape(message)):
        render(values)


def test_values_are_json_serialisable_yaml() -> None:
    """values.yaml parses, and every engine the chart can enable is one the service knows."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    json.dumps(values)
    assert (
        set(values["restoreWorkers"])
        <= set(values["config"]["engines"])
        == set(Settings.model_fields["engines"].default)
    )
