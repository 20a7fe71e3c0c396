"""Every query that reads the API's ``/metrics`` names series that exist there, with labels they carry.

The queries: each panel of the Grafana dashboard (``deploy/grafana/ipfvr.json``), and the KEDA
triggers of the Helm chart and of ``deploy/k8s/keda.yaml``. The exposition comes from the real app
(``create_app`` on the real Redis), after one observation of every Redis-backed metric through the
workers' own :class:`~jobs.metrics.MetricsRecorder`, so that every family has samples and labels.

The PromQL is read with a small scanner sized to what these queries use: Grafana's variables are
substituted, ``by (...)`` groupings and ``{...}`` matchers are taken apart, and every identifier
left must be a PromQL function or keyword, or a series name of the exposition.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import yaml
from fastapi.testclient import TestClient
from helm_python.chart import Chart
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from ipfvr.devstack import S3Server
from jobs.metrics import COUNTERS, HISTOGRAMS, MetricsRecorder
from jobs.settings import Settings
from tests.service.stack import REPO, on_test_services

DASHBOARD = REPO / "deploy" / "grafana" / "ipfvr.json"
FUNCTIONS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "rate",
    "irate",
    "increase",
    "histogram_quantile",
    "clamp_min",
    "clamp_max",
    "topk",
    "bottomk",
    "abs",
    "round",
    "vector",
    "scalar",
    "absent",
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
REQUIRED_PANELS = {
    "Queue depth",
    "Jobs by status",
    "Job duration percentiles",
    "Restored frames/s",
    "Webhook failures",
    "Worker states",
}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


@dataclass
class Exposition:
    """Series names of a /metrics text, with the label names each one carries."""

    labels: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Exposition:
        exposition = cls()
        for family in text_string_to_metric_families(text):
            for suffix in SUFFIXES.get(family.type, ()):
                exposition.labels.setdefault(family.name + suffix, set())
            for sample in family.samples:
                exposition.labels.setdefault(sample.name, set()).update(sample.labels)
        return exposition


def check_query(expr: str, exposition: Exposition) -> set[str]:
    """The series ``expr`` reads; fails naming what /metrics lacks (a series, a label, an unknown word)."""
    for variable, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"undefined Grafana variable in {expr!r}"
    groupings = [
        [g.strip() for g in m.group(2).split(",") if g.strip()]
        for m in re.finditer(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)", expr)
    ]
    rest = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    rest = re.sub(r"\[[0-9]+[smhdwy]\]", " ", rest)  # range selectors
    series: set[str] = set()

    def selector(match: re.Match[str]) -> str:
        name, matchers = match.group(1), match.group(2)
        assert name in exposition.labels, f"{name} is not in /metrics (query {expr!r})"
        series.add(name)
        for label in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*\"", matchers):
            assert label in exposition.labels[name], f"{name} has no label {label!r} (query {expr!r})"
        return " "

    rest = re.sub(r"([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})", selector, rest)
    for word in re.findall(r"[a-zA-Z_:][\w:]*", re.sub(r"\b\d+(\.\d+)?\b", " ", rest)):
        if word in FUNCTIONS | KEYWORDS:
            continue
        assert word in exposition.labels, f"{word} is not in /metrics nor a known PromQL word (query {expr!r})"
        series.add(word)
    assert series, f"no series in {expr!r}"
    available = set().union(*(exposition.labels[s] for s in series)) | (
        {"le"} if any(s.endswith("_bucket") for s in series) else set()
    )
    for labels in groupings:
        assert set(labels) <= available, f"grouping by {labels} but {sorted(series)} carry {sorted(available)}"
    return series


@pytest.fixture(scope="module")
def exposition(s3_server: S3Server, redis_url: str, redis_prefix: Callable[[], str]) -> Exposition:
    prefix = redis_prefix()
    values = on_test_services(s3_server, redis_url, prefix, "ipfvr-g-")
    settings = Settings(**{k: v for k, v in values.items() if v is not None})
    app = create_app(settings, configure_logs=False)
    recorder = MetricsRecorder(app.state.services.redis, settings.key_prefix)
    for name, spec in COUNTERS.items():  # what workers and the webhook outbox record
        recorder.inc(name, **{label: "x" for label in spec.labels})
    for name, spec in HISTOGRAMS.items():
        recorder.observe(name, 1.0, **{label: "x" for label in spec.labels})
    try:
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 200  # the API's own request metrics get a sample
            response = client.get("/metrics")
    finally:
        app.state.services.close()
    assert response.status_code == 200
    return Exposition.parse(response.text)


def test_every_dashboard_panel_queries_what_metrics_exports(exposition: Exposition) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert {p["title"] for p in panels} >= REQUIRED_PANELS
    assert len({p["id"] for p in panels}) == len(panels)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    read: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"].strip("${}") in variables, panel["title"]
        for target in panel["targets"]:
            read |= check_query(target["expr"], exposition)
    # the six subjects of the dashboard, each from its own series
    for name in (
        "ipfvr_queue_waiting_jobs",
        "ipfvr_jobs_completed_total",
        "ipfvr_job_total_seconds_bucket",
        "ipfvr_frames_restored_total",
        "ipfvr_webhook_deliveries_total",
        "ipfvr_workers",
    ):
        assert name in read, name


def test_the_keda_triggers_query_what_metrics_exports(exposition: Exposition) -> None:
    manifests = Chart.load(REPO / "deploy" / "helm" / "ipfvr").render(
        {"secretKey": {"value": "k" * 40}, "restoreWorkers": {"ipfvr": {"enabled": True}}}, name="rel"
    )
    documents = [
        *yaml.safe_load_all(manifests["ipfvr/templates/keda.yaml"]),
        *yaml.safe_load_all((REPO / "deploy" / "k8s" / "keda.yaml").read_text()),
    ]
    queries = [t["metadata"]["query"] for d in documents if d for t in d["spec"]["triggers"]]
    assert len(queries) == 3
    for query in queries:
        assert check_query(query, exposition) == {"ipfvr_queue_waiting_jobs", "ipfvr_queue_active_jobs"}


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ("max(ipfvr_queue_waiting)", "ipfvr_queue_waiting is not in /metrics"),
        ('max(ipfvr_workers{status="ready"})', "ipfvr_workers has no label 'status'"),
        ("max by (engine) (ipfvr_workers)", "grouping by ['engine']"),
        ("rate(ipfvr_jobs_created[5m])", "ipfvr_jobs_created is not in /metrics"),
        ("max(ipfvr_workers) / $replicas", "undefined Grafana variable"),
        ("quantile_over_time(0.9, ipfvr_workers[5m])", "quantile_over_time is not in /metrics nor a known PromQL word"),
    ],
)
def test_the_checker_refuses_what_metrics_lacks(exposition: Exposition, query: str, complaint: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(complaint)):
        check_query(query, exposition)
