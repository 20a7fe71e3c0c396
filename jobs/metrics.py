"""Service metrics kept in Redis, exported by the API's ``/metrics`` (Prometheus naming, no job-id labels).

Workers are many processes on many machines and come and go; rather than scraping each, they
add their observations to Redis (a few ``HINCRBY`` per job) and the API exports one aggregate.
Queue depth (waiting and active, the KEDA scaling signal) and worker states are read live at
scrape time. All label values are bounded sets (engines, statuses, stages, outcomes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from jobs.store.keys import Keys
from jobs.store.replies import text_hash
from jobs.store.workers import WorkerRegistry, WorkerState

NAMESPACE = "ipfvr"
GiB = 1024**3
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)  # up to 8 h
LOAD_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 900)
MEMORY_BUCKETS = tuple(float(2**i * GiB) for i in range(8))  # 1 GiB .. 128 GiB


@dataclass(frozen=True)
class Spec:
    help: str
    labels: tuple[str, ...] = ()
    buckets: Sequence[float] = ()  # histograms only


COUNTERS = {
    "jobs_created": Spec("Jobs created", ("engine",)),
    "jobs_completed": Spec("Jobs that reached a terminal status", ("status",)),
    "frames_restored": Spec("Video frames written by successful jobs", ("engine",)),
    "webhook_deliveries": Spec("Webhook delivery attempts by outcome", ("outcome",)),
}
HISTOGRAMS = {
    "job_queue_wait_seconds": Spec("Seconds from job creation to its first start", ("engine",), DURATION_BUCKETS),
    "job_predict_seconds": Spec("Seconds from a job's first start to its end", ("engine", "status"), DURATION_BUCKETS),
    "job_total_seconds": Spec("Seconds from job creation to its end", ("engine", "status"), DURATION_BUCKETS),
    "job_stage_seconds": Spec("Seconds spent per stage of a run", ("engine", "stage"), DURATION_BUCKETS),
    "model_load_seconds": Spec("Seconds a worker took to load its model", ("engine",), LOAD_BUCKETS),
    "gpu_peak_memory_bytes": Spec("Peak GPU memory allocated during a run", ("engine",), MEMORY_BUCKETS),
}


def _signature(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def _parse_signature(signature: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in signature.split(",") if part)


class MetricsRecorder:
    """Adds observations to Redis (worker side)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        spec = COUNTERS[name]
        if set(labels) != set(spec.labels):
            raise ValueError(f"counter {name} takes labels {spec.labels}, got {sorted(labels)}")
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrbyfloat(self.keys.counter(name), _signature(labels), amount)
        pipe.sadd(self.keys.metric_names(), f"c:{name}")
        pipe.execute()

    def observe(self, name: str, value: float, **labels: str) -> None:
        spec = HISTOGRAMS[name]
        if set(labels) != set(spec.labels):
            raise ValueError(f"histogram {name} takes labels {spec.labels}, got {sorted(labels)}")
        bucket = next((str(b) for b in spec.buckets if value <= b), "+Inf")
        sig = _signature(labels)
        key = self.keys.histogram(name)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(key, f"{sig}|{bucket}", 1)
        pipe.hincrbyfloat(key, f"{sig}|sum", value)
        pipe.hincrby(key, f"{sig}|count", 1)
        pipe.sadd(self.keys.metric_names(), f"h:{name}")
        pipe.execute()


class RedisCollector(Collector):
    """prometheus_client collector: counters and histograms from Redis, queue depth and workers live."""

    def __init__(
        self, client: redis.Redis, prefix: str, engines: Iterable[str], queue_for: Callable[[str], str]
    ) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self.engines = list(engines)
        self.queue_for = queue_for
        self.workers = WorkerRegistry(client, prefix)

    def collect(self) -> Iterator[Metric]:
        yield from self._queues()
        yield self._worker_states()
        for name, spec in COUNTERS.items():
            family = CounterMetricFamily(f"{NAMESPACE}_{name}", spec.help, labels=list(spec.labels))
            for sig, value in sorted(text_hash(self.redis.hgetall(self.keys.counter(name))).items()):
                labels = _parse_signature(sig)
                family.add_metric([labels.get(label, "") for label in spec.labels], float(value))
            yield family
        for name, spec in HISTOGRAMS.items():
            yield self._histogram(name, spec)

    def _queues(self) -> Iterator[Metric]:
        waiting = GaugeMetricFamily(f"{NAMESPACE}_queue_waiting_jobs", "Queued jobs not started yet", labels=["queue"])
        active = GaugeMetricFamily(f"{NAMESPACE}_queue_active_jobs", "Jobs a worker is running", labels=["queue"])
        pipe = self.redis.pipeline(transaction=False)
        for engine in self.engines:
            pipe.zcard(self.keys.waiting(engine))
            pipe.scard(self.keys.active(engine))
        values = pipe.execute()
        for i, engine in enumerate(self.engines):
            waiting.add_metric([self.queue_for(engine)], values[2 * i])
            active.add_metric([self.queue_for(engine)], values[2 * i + 1])
        yield waiting
        yield active

    def _worker_states(self) -> Metric:
        family = GaugeMetricFamily(f"{NAMESPACE}_workers", "Worker processes by state", labels=["state"])
        counts = self.workers.counts()
        for state in WorkerState:
            family.add_metric([state.value], counts[state])
        return family

    def _histogram(self, name: str, spec: Spec) -> Metric:
        family = HistogramMetricFamily(f"{NAMESPACE}_{name}", spec.help, labels=list(spec.labels))
        series: dict[str, dict[str, float]] = defaultdict(dict)
        for field, value in text_hash(self.redis.hgetall(self.keys.histogram(name))).items():
            sig, _, part = field.rpartition("|")
            series[sig][part] = float(value)
        for sig, parts in sorted(series.items()):
            labels = _parse_signature(sig)
            cumulative, buckets = 0.0, []
            for bound in [*(str(b) for b in spec.buckets), "+Inf"]:
                cumulative += parts.get(bound, 0.0)
                buckets.append((bound if bound == "+Inf" else str(float(bound)), cumulative))
            family.add_metric([labels.get(label, "") for label in spec.labels], buckets, parts.get("sum", 0.0))
        return family
