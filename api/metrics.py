"""Prometheus metrics at GET /metrics (prometheus_client's text format).

Two kinds, kept apart because they behave differently across API processes:

- This process's HTTP requests (counts and latencies by method, route template and
  status), counted by a middleware as they are served. Each API process counts its own:
  scrape every one (Prometheus' `instance` label tells them apart) and sum over them.
- The service's state, read from the database and the broker at each scrape (jobs by
  status, queue depths, GPU-hours per organization, running jobs' tokens/s): never
  counted in memory, so they cannot drift, and every process answers the same (take any
  one, or `max` over them). Each source that cannot be read (the database is down) is
  left out of that scrape and says so in `ftsvc_metrics_source_up`, so the request
  metrics are still served.

Not under /v1, not in /openapi.json (no JSON body), and open unless FTSVC_METRICS_TOKEN is
set; then it asks for `Authorization: Bearer <that token>`."""

from __future__ import annotations

import collections
import hmac
import logging
import time
from collections.abc import Callable, Iterable, Iterator

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import inference_servers, queue, service_stats, worker_registry
from core.auth import bearer_key
from core.db import read_scope
from core.errors import Unauthorized
from core.settings import get_settings

log = logging.getLogger("ftsvc.metrics")

# How long a scrape waits for the broker's queue lengths.
BROKER_TIMEOUT_SECONDS = 2.0
# Latency buckets from a cached poll (milliseconds) to an upload or a long event stream.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# The route label of a request no route matched (a 404 on an unknown path): one label for
# all of them, so scanners cannot grow the series without bound.
UNMATCHED = "<unmatched>"


def _jobs_by_status() -> Iterator[Metric]:
    with read_scope() as session:
        counts = service_stats.jobs_by_status(session)
    family = GaugeMetricFamily("ftsvc_jobs", "Fine-tuning jobs in each status", labels=["status"])
    for status, count in counts.items():
        family.add_metric([status], count)
    yield family


def _gpu_hours() -> Iterator[Metric]:
    with read_scope() as session:
        hours = service_stats.gpu_hours_by_organization(session)
    family = GaugeMetricFamily(
        "ftsvc_gpu_hours",
        "GPU-hours held by the organization's jobs (every run, times its GPUs); deleted jobs no longer count",
        labels=["organization"],
    )
    for org, value in sorted(hours.items()):
        family.add_metric([org], value)
    yield family


def _training_speed() -> Iterator[Metric]:
    with read_scope() as session:
        speeds = service_stats.training_speeds(session)
    family = GaugeMetricFamily(
        "ftsvc_training_tokens_per_second",
        "Training throughput of each running job at its latest logged step",
        labels=["job_id", "organization"],
    )
    for speed in speeds:
        family.add_metric([speed.job_id, speed.organization_id], speed.tokens_per_second)
    yield family


def _queue_depths() -> Iterator[Metric]:
    depths = queue.queue_depths(queue.queue_names(), BROKER_TIMEOUT_SECONDS)
    family = GaugeMetricFamily("ftsvc_queue_depth", "Messages waiting in each Celery queue", labels=["queue"])
    for name, depth in depths.items():
        family.add_metric([name], depth)
    yield family


def _live_workers() -> Iterator[Metric]:
    """What can run work now: live training workers, their GPUs by model, and live
    inference servers by device (their registries' liveness timeouts)."""
    with read_scope() as session:
        workers = worker_registry.live_workers(session)
        servers = inference_servers.live(session)
    yield GaugeMetricFamily(
        "ftsvc_live_workers", "Training workers heard from within their liveness timeout", len(workers)
    )
    gpus = GaugeMetricFamily("ftsvc_live_gpus", "GPUs of the live training workers, by model", labels=["gpu"])
    for name, count in sorted(collections.Counter(d.name for w in workers for d in w.inventory.gpus).items()):
        gpus.add_metric([name], count)
    yield gpus
    inference = GaugeMetricFamily(
        "ftsvc_live_inference_servers", "Inference servers heard from within their liveness timeout", labels=["device"]
    )
    for device, count in sorted(collections.Counter(s.device_name for s in servers).items()):
        inference.add_metric([device], count)
    yield inference


# The sources of the service's state, by name (the `source` label of
# ftsvc_metrics_source_up).
STATE_SOURCES: dict[str, Callable[[], Iterable[Metric]]] = {
    "jobs": _jobs_by_status,
    "gpu_hours": _gpu_hours,
    "training_speed": _training_speed,
    "queues": _queue_depths,
    "workers": _live_workers,
}


class ServiceStateCollector(Collector):
    """Reads every source at each scrape; a failing one is logged and reported down."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "ftsvc_metrics_source_up", "Whether a source could be read at this scrape", labels=["source"]
        )
        for name, source in STATE_SOURCES.items():
            try:
                families = list(source())
            except Exception:
                log.exception("metrics: the %s source could not be read", name)
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            yield from families
        yield up


class RequestMetrics:
    """Pure ASGI middleware (a BaseHTTPMiddleware would buffer event streams): counts each
    HTTP request and its duration, to the end of its body, by the route it matched."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "ftsvc_http_requests",
            "HTTP requests served by this API process",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "ftsvc_http_request_duration_seconds",
            "Time to serve an HTTP request, to the end of its response body",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500  # an exception before the response is a 500

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            method = scope["method"]
            self.requests.labels(method, template, str(status)).inc()
            self.latency.labels(method, template).observe(time.perf_counter() - started)


def _require_token(request: Request) -> None:
    expected = get_settings().metrics_token
    if not expected:
        return
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    sent = bearer_key(credentials if scheme.lower() == "bearer" else None)
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Unauthorized("Invalid metrics token (FTSVC_METRICS_TOKEN)", code="invalid_metrics_token")


def install(app: FastAPI) -> None:
    """GET /metrics and the request-counting middleware, on a registry of this app's
    own (so apps built in one process, as tests do, keep separate counts)."""
    registry = CollectorRegistry()
    registry.register(ServiceStateCollector())
    app.add_middleware(RequestMetrics, registry=registry)

    async def metrics(request: Request) -> Response:
        _require_token(request)
        # The state sources query the database and the broker: off the event loop.
        body: bytes = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
