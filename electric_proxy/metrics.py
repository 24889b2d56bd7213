"""Prometheus metrics for the proxy's endpoints, in a registry of the app's own.

``pip install 'electric-proxy[metrics]'`` brings in ``prometheus-client``; without it the
proxy works as before and only :class:`Metrics` refuses to be built. Every app gets its own
``CollectorRegistry`` (never the process-wide default), so several apps, or tests, never
collide.

Values are recorded where they are cheapest:

* the endpoint's ``observer`` (one call per request on the proxy's routes): requests by
  status class, and the proxy's own error responses by the :class:`~electric_proxy.Refusal`
  they carry (status, code, step), from which auth failures and policy rejections follow;
* an ``aiohttp.TraceConfig`` on the upstream session: time to Electric's response headers,
  once per upstream request (a coalesced long-poll is one);
* a collector read at scrape time: held live requests, coalescing, JWKS fetches and key
  outages come from counters the proxy keeps anyway, at no cost per request;
* the process, read from ``/proc`` at scrape time by prometheus_client's ``ProcessCollector``
  (open file descriptors and their limit: each held request costs two; memory, CPU, start
  time), and ``electric_proxy_build_info`` naming the versions that run.

No ``_created`` series: prometheus_client adds one per counter and histogram child (the time
it was first used), which doubles the series and that nobody graphs. Its switches are
process-wide (``disable_created_metrics()``, or ``PROMETHEUS_DISABLE_CREATED_SERIES`` read
once when ``prometheus_client`` is imported) and would change every other registry of an
embedding app, so the exposition here leaves them out of this registry's output alone.

Every label is bounded and chosen by the proxy: the route is the configured path (a
streams route is ``<path>/*``), the method one of a fixed list, the step a class name, the
code an error code set in code. No label ever holds a query value, a stream name, a
token or a secret.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import platform
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import hdrs, web
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .chain import Handler, Middleware, Step, StepMetric
from .endpoint import Endpoint
from .errors import ElectricProxyError, Refusal
from .health import PROBE
from .keys import REFUSAL
from .labels import step_labels
from .protocol import live_kind

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = ["METRICS", "Metrics", "MetricsSettings", "MetricsUnavailable", "metrics_available"]

log = logging.getLogger("electric_proxy.metrics")

#: Seconds. Fine steps for catch-up requests, then around Electric's 20 s long-poll hold
#: (an answer in (19, 21] is a hold that timed out) and up to the 60 s SSE and 90 s read limit.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 19.0, 21.0, 30.0,
    60.0, 90.0,
)  # fmt: skip

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
_STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")
_MODES = ("catch_up", "long_poll", "sse")


class MetricsUnavailable(ElectricProxyError, RuntimeError):
    """``prometheus-client`` is not installed (the ``metrics`` extra)."""


def metrics_available() -> bool:
    return importlib.util.find_spec("prometheus_client") is not None


class MetricsSettings(BaseModel):
    """The ``[metrics]`` section: where the metrics are served."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    listener: bool = Field(
        True, description="Serve the metrics on a listener of their own (host, port, path)"
    )
    host: str = Field("127.0.0.1", description="Address of the metrics listener")
    port: int = Field(
        9464,
        ge=0,
        le=65535,
        description="Port of the metrics listener; with --workers N, worker i uses port + i",
    )
    path: str = Field("/metrics", description="Path on the metrics listener")
    main_path: str | None = Field(
        None, description="Also serve the metrics at this path on the proxy's own listener"
    )

    @field_validator("path", "main_path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or value == "/"):
            raise ValueError("expected a path like /metrics")
        return value

    @model_validator(mode="after")
    def _exposed(self) -> MetricsSettings:
        if not self.listener and self.main_path is None:
            raise ValueError("with `listener = false`, set `main_path` to serve the metrics")
        return self


class _Observer:
    """Counts one endpoint's requests: the middleware :meth:`Metrics.observe` gives it."""

    def __init__(self, metrics: Metrics, route: str, steps: Sequence[Middleware]) -> None:
        self._metrics = metrics
        self._route = route
        self._steps = step_labels(steps)
        self._authenticators = {id(s) for s in steps if isinstance(s, Step) and s.authenticates}
        self._requests: dict[tuple[str, str], Any] = {}

    def _count(self, method: str, status: str) -> None:
        key = (method, status)
        child = self._requests.get(key)
        if child is None:
            label = method if method in _METHODS else "OTHER"
            child = self._requests[key] = self._metrics.requests.labels(self._route, label, status)
        child.inc()

    async def __call__(self, request: web.Request, handle: Handler) -> web.StreamResponse:
        try:
            response = await handle(request)
        except asyncio.CancelledError:
            self._count(request.method, "cancelled")
            raise
        except web.HTTPException as exc:  # aiohttp's idiom for an answer, raised by a step
            self._count(request.method, _STATUS_CLASSES[min(exc.status // 100, 5)])
            raise
        except Exception:
            self._count(request.method, "5xx")  # aiohttp answers it with a 500
            raise
        status = response.status
        self._count(request.method, _STATUS_CLASSES[min(status // 100, 5)])
        if status >= 400:
            refusal = response.get(REFUSAL)
            if refusal is not None:
                self._refused(refusal)
        return response

    def _refused(self, refusal: Refusal) -> None:
        metrics, route = self._metrics, self._route
        step = "endpoint" if refusal.step is None else self._steps.get(id(refusal.step), "other")
        status = refusal.status
        metrics.errors.labels(route, step, str(status), refusal.code).inc()
        by_authenticator = refusal.step is not None and id(refusal.step) in self._authenticators
        if status == 401 or (by_authenticator and status >= 500):
            metrics.auth_failures.labels(route, step, refusal.code).inc()
        elif status in (400, 403) and refusal.step is not None:
            metrics.policy_rejections.labels(route, step, refusal.code).inc()


#: The shape cache's counters (attribute names of ``ShapeCache``) and what they count.
_SHAPE_CACHE_COUNTERS = (
    ("hits", "Catch-up requests answered from the shape cache (the chain ran; Electric did not)"),
    ("misses", "Cacheable catch-up requests the shape cache sent on to Electric"),
    ("evictions", "Shape-cache entries pushed out to stay within shape_cache_bytes"),
)


class _State:
    """Read at scrape time from counters the proxy keeps anyway."""

    def __init__(self, endpoints: Sequence[tuple[str, Endpoint]]) -> None:
        self._endpoints = endpoints

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        held = GaugeMetricFamily(
            "electric_proxy_held_requests",
            "Live requests held open right now (long-polls waiting, SSE streams)",
            labels=["route", "kind"],
        )
        drained = CounterMetricFamily(
            "electric_proxy_drained_requests",
            "Held requests ended early because the proxy was shutting down",
            labels=["route"],
        )
        interrupted = CounterMetricFamily(
            "electric_proxy_interrupted_requests",
            "Held requests ended by live revocation (an interrupt), to be re-checked",
            labels=["route"],
        )
        expired = CounterMetricFamily(
            "electric_proxy_expired_requests",
            "Held requests ended when their credential expired",
            labels=["route"],
        )
        joined = CounterMetricFamily(
            "electric_proxy_coalesced_requests",
            "Live long-polls answered by another client's identical upstream request",
            labels=["route"],
        )
        flights = CounterMetricFamily(
            "electric_proxy_coalesce_upstream_requests",
            "Upstream requests made for coalescable live long-polls",
            labels=["route"],
        )
        cache_counters = {
            name: CounterMetricFamily(f"electric_proxy_shape_cache_{name}", text, labels=["route"])
            for name, text in _SHAPE_CACHE_COUNTERS
        }
        held_bytes = GaugeMetricFamily(
            "electric_proxy_shape_cache_bytes",
            "Bytes the shape cache holds (bodies, headers, keys, bookkeeping)",
            labels=["route"],
        )
        for route, endpoint in self._endpoints:
            for kind, count in endpoint.inflight.held.items():
                held.add_metric([route, kind], count)
            drained.add_metric([route], endpoint.inflight.drained)
            interrupted.add_metric([route], endpoint.inflight.interrupted)
            expired.add_metric([route], endpoint.inflight.expired)
            coalescer = endpoint.forwarder.coalescer
            if coalescer is not None:
                joined.add_metric([route], coalescer.joined)
                flights.add_metric([route], coalescer.upstream_requests)
            cache = endpoint.forwarder.shape_cache
            if cache is not None:
                for name, family in cache_counters.items():
                    family.add_metric([route], getattr(cache, name))
                held_bytes.add_metric([route], cache.bytes_held)
        yield from (held, drained, interrupted, expired, joined, flights)
        yield from (*cache_counters.values(), held_bytes)
        yield from self._step_metrics()

    def _step_metrics(self) -> Iterator[Metric]:
        """What each step reports through :meth:`~electric_proxy.Step.metrics`, one family
        per name, with ``route`` and ``step`` labels added."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        families: dict[str, Any] = {}  # Counter/GaugeMetricFamily, imported lazily
        label_names: dict[str, tuple[str, ...]] = {}
        for route, endpoint in self._endpoints:
            labels = step_labels(endpoint.steps)
            for step in endpoint.steps:
                if not isinstance(step, Step):
                    continue
                for sample in step.metrics():
                    own = tuple(sorted(sample.labels))
                    family = families.get(sample.name)
                    if family is None:
                        kind = (
                            CounterMetricFamily if sample.kind == "counter" else GaugeMetricFamily
                        )
                        label_names[sample.name] = own
                        family = kind(sample.name, sample.help, labels=["route", "step", *own])
                        families[sample.name] = family
                    elif label_names[sample.name] != own:
                        log.warning(
                            "step metric %s changed its labels; sample dropped", sample.name
                        )
                        continue
                    values = [route, labels[id(step)], *(sample.labels[k] for k in own)]
                    family.add_metric(values, sample.value)
        yield from families.values()


class _Reported:
    """Numbers of the process beyond its endpoints' (see :meth:`Metrics.report`)."""

    def __init__(self, source: Callable[[], Iterable[StepMetric]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for sample in self._source():
            kind = CounterMetricFamily if sample.kind == "counter" else GaugeMetricFamily
            labels = sorted(sample.labels)
            family = kind(sample.name, sample.help, labels=labels)
            family.add_metric([sample.labels[k] for k in labels], sample.value)
            yield family


class _WithoutCreated:
    """A registry's families without their ``_created`` samples (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import Metric

        for family in self._registry.collect():
            kept = Metric(family.name, family.documentation, family.type, family.unit)
            created = family.name + "_created"
            kept.samples = [s for s in family.samples if s.name != created]
            yield kept


class _BuildInfo:
    """``electric_proxy_build_info``: which versions a scrape target runs, for dashboards
    that compare instances across a rolling deploy."""

    def __init__(self) -> None:
        from prometheus_client.core import GaugeMetricFamily

        from . import __version__

        self._family = GaugeMetricFamily(
            "electric_proxy_build_info",
            "Always 1; the labels name the versions of electric-proxy, Python and aiohttp",
            labels=["version", "python", "aiohttp"],
        )
        self._family.add_metric([__version__, platform.python_version(), aiohttp.__version__], 1)

    def collect(self) -> Iterable[Metric]:
        return [self._family]


class Metrics:
    """The metrics of some endpoints, in a registry of their own.

    Build it first and give it to each endpoint as it is built
    (``ShapeProxy(..., observers=[metrics])``), then ``setup(app)``; serve it with
    ``setup(app, path="/metrics")`` or on a listener of its own
    (``app.cleanup_ctx.append(metrics.listener(host, port))``).
    """

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
        except ImportError as exc:
            raise MetricsUnavailable(
                "metrics need prometheus-client: pip install 'electric-proxy[metrics]'"
            ) from exc
        self.registry = registry if registry is not None else CollectorRegistry()
        #: Where the separate listener is bound, once started: ``[(host, port), ...]``.
        self.addresses: list[Any] = []
        self.requests = Counter(
            "electric_proxy_requests",
            "Requests on the proxy's routes by route, method and status class "
            "('cancelled': the client went away, or the server stopped, before the request "
            "was done)",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "electric_proxy_errors",
            "Error responses made by the proxy (not Electric's), by the step that raised "
            "('endpoint': path, method, upstream failure, shutdown), status and code",
            ["route", "step", "status", "code"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "electric_proxy_auth_failures",
            "Requests refused by authentication: 401s, and 5xx of an authenticator",
            ["route", "step", "reason"],
            registry=self.registry,
        )
        self.policy_rejections = Counter(
            "electric_proxy_policy_rejections",
            "Requests refused by a step with a 400 or 403 (policy, gatekeeper, CORS)",
            ["route", "step", "reason"],
            registry=self.registry,
        )
        self.upstream_latency = Histogram(
            "electric_proxy_upstream_latency_seconds",
            "Time from sending a request upstream to its response headers",
            ["route", "mode"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._observed: list[tuple[str, Endpoint]] = []
        self.registry.register(_State(self._observed))
        # process_open_fds, process_max_fds, process_resident_memory_bytes,
        # process_cpu_seconds_total, process_start_time_seconds (Linux /proc; elsewhere none).
        ProcessCollector(registry=self.registry)
        self.registry.register(_BuildInfo())
        self._exposed = _WithoutCreated(self.registry)

    def observe(self, endpoint: Endpoint) -> Middleware:
        """Count ``endpoint``'s requests and upstream latency: give this object to the
        endpoint's ``observers`` when building it (``ShapeProxy(..., observers=[metrics])``)."""
        route = endpoint.route_label
        endpoint.forwarder.trace_configs.append(self._latency_trace(route))
        self._observed.append((route, endpoint))
        return _Observer(self, route, endpoint.steps)

    def report(self, source: Callable[[], Iterable[StepMetric]]) -> None:
        """Add the numbers ``source()`` gives at each scrape, one family per sample, with
        its own labels only (no route): for parts of the process that are not an endpoint,
        such as :class:`~electric_proxy.Revocations`."""
        self.registry.register(_Reported(source))

    def _latency_trace(self, route: str) -> aiohttp.TraceConfig:
        children = {mode: self.upstream_latency.labels(route, mode) for mode in _MODES}

        async def started(
            session: aiohttp.ClientSession,
            context: SimpleNamespace,
            params: aiohttp.TraceRequestStartParams,
        ) -> None:
            context.started = time.perf_counter()

        async def answered(
            session: aiohttp.ClientSession,
            context: SimpleNamespace,
            params: aiohttp.TraceRequestEndParams,
        ) -> None:
            if context.trace_request_ctx is PROBE:
                return
            mode = live_kind(params.url.query, params.headers.get(hdrs.ACCEPT, ""))
            children[mode or "catch_up"].observe(time.perf_counter() - context.started)

        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(started)
        trace.on_request_end.append(answered)
        return trace

    def setup(self, app: web.Application, *, path: str | None = None) -> None:
        """Store the metrics under :data:`METRICS`; with ``path``, serve them on ``app``."""
        app[METRICS] = self
        if path is not None:
            app.router.add_get(path, self.handle)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition in the format ``accept`` asks for, and its content type."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept)
        return encoder(self._exposed), content_type

    async def handle(self, request: web.Request) -> web.Response:
        body, content_type = self.render(request.headers.get(hdrs.ACCEPT, ""))
        headers = {hdrs.CONTENT_TYPE: content_type, hdrs.CACHE_CONTROL: "no-store"}
        return web.Response(body=body, headers=headers)

    def listener(
        self, host: str, port: int, path: str = "/metrics"
    ) -> Callable[[web.Application], AsyncIterator[None]]:
        """A cleanup context serving the metrics on ``host:port`` for the app's lifetime."""

        async def serve(app: web.Application) -> AsyncIterator[None]:
            metrics_app = web.Application()
            metrics_app.router.add_get(path, self.handle)
            runner = web.AppRunner(metrics_app, access_log=None, handle_signals=False)
            await runner.setup()
            try:
                await web.TCPSite(runner, host, port).start()
                self.addresses = list(runner.addresses)
                log.info("metrics on http://%s:%s%s", host, self.addresses[0][1], path)
                yield
            finally:
                await runner.cleanup()

        return serve


METRICS = web.AppKey("electric_proxy.metrics", Metrics)
