"""Prometheus metrics: what is counted, where it is served, and what never becomes a label."""

from __future__ import annotations

import asyncio
import platform
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import prometheus_client
import pytest
from aiohttp import web
from conftest import standard_chain
from prometheus_client.parser import text_string_to_metric_families
from pydantic import Field

import electric_proxy
from electric_proxy import (
    ConfigError,
    Handler,
    Health,
    JwtAuth,
    Metrics,
    ShapeProxy,
    Step,
    StepMetric,
    StreamProxy,
    parse_config,
)
from electric_proxy.endpoint import Endpoint
from electric_proxy.metrics import METRICS
from electric_proxy.testing import ALICE, BOB, RunningUpstream, auth, eventually

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def app_with(endpoints: list[Endpoint], metrics: Metrics) -> tuple[web.Application, Metrics]:
    """The endpoints (built with ``observers=[metrics]``) on one app, metrics at /metrics."""
    app = web.Application()
    for endpoint in endpoints:
        endpoint.setup(app)
    metrics.setup(app, path="/metrics")
    Health(endpoints, cache=0).setup(app)
    return app, metrics


async def scrape(client: Any, path: str = "/metrics") -> tuple[str, Samples]:
    resp = await client.get(path)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def raw_status(client: Any, target: str) -> bytes:
    """Sent as bytes: a client library would normalise the path variant."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n".encode())
    status = (await reader.readline()).split()[1]
    await reader.read()
    writer.close()
    return status


async def test_requests_refusals_and_upstream_latency(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    chain = standard_chain(electric_upstream, client_where=True, filter_columns={"title": "text"})
    metrics = Metrics()
    proxy = ShapeProxy(upstream=electric_upstream.url, chain=chain, observers=[metrics])
    app, _ = app_with([proxy], metrics)
    client = await aiohttp_client(app)
    shape = "/v1/shape"
    assert (await client.get(shape, params={"offset": "-1"}, headers=auth(ALICE))).status == 200
    assert (await client.get(shape, params={"offset": "-1"})).status == 401
    bad = auth("not-a-token-anyone-issued")
    assert (await client.get(shape, params={"offset": "-1"}, headers=bad)).status == 401
    secret_table = {"offset": "-1", "table": "payroll_secret_table"}
    assert (await client.get(shape, params=secret_table, headers=auth(BOB))).status == 403
    breakout = {"offset": "-1", "where": "true) OR (true"}
    assert (await client.get(shape, params=breakout, headers=auth(BOB))).status == 400
    assert await raw_status(client, "/v1/%73hape?offset=-1") == b"404"
    assert (await client.patch(shape)).status == 405
    assert (await client.request("TRACE", shape)).status == 405
    assert (await client.get("/readyz")).status == 200

    text, samples = await scrape(client)
    route = {"route": "/v1/shape"}
    requests = "electric_proxy_requests_total"
    assert value(samples, requests, **route, method="GET", status="2xx") == 1
    assert value(samples, requests, **route, method="GET", status="4xx") == 5
    assert value(samples, requests, **route, method="PATCH", status="4xx") == 1
    assert value(samples, requests, **route, method="OTHER", status="4xx") == 1

    failures = "electric_proxy_auth_failures_total"
    assert value(samples, failures, **route, step="BearerAuth", reason="missing_token") == 1
    assert value(samples, failures, **route, step="BearerAuth", reason="invalid_token") == 1
    rejections = "electric_proxy_policy_rejections_total"
    assert value(samples, rejections, **route, step="ShapePolicy", reason="shape_not_allowed") == 1
    assert value(samples, rejections, **route, step="ShapePolicy", reason="invalid_filter") == 1
    errors = "electric_proxy_errors_total"
    assert value(samples, errors, **route, step="endpoint", status="404", code="not_found") == 1
    assert (
        value(samples, errors, **route, step="endpoint", status="405", code="method_not_allowed")
        == 2
    )
    assert value(samples, errors, **route, step="BearerAuth", status="401", code="missing_token")

    # One upstream request (the 200); the refused ones and the readiness probe are not traffic.
    latency = "electric_proxy_upstream_latency_seconds_count"
    assert value(samples, latency, **route, mode="catch_up") == 1
    assert value(samples, latency, **route, mode="long_poll") == 0

    # Labels are bounded and chosen by the proxy: nothing the client sent, nothing secret.
    for leak in (
        electric_upstream.secret,
        ALICE,
        BOB,
        "not-a-token-anyone-issued",
        "payroll_secret_table",
        "true) OR",
        "%73hape",
        "TRACE",
    ):
        assert leak not in text


async def test_held_requests_and_coalescing(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    metrics = Metrics()
    proxy = ShapeProxy(
        upstream=electric_upstream.url, chain=standard_chain(electric_upstream), observers=[metrics]
    )
    app, _ = app_with([proxy], metrics)
    client = await aiohttp_client(app)
    resp = await client.get("/v1/shape", params={"offset": "-1"}, headers=auth(ALICE))
    position = {
        "handle": resp.headers["electric-handle"],
        "offset": resp.headers["electric-offset"],
        "live": "true",
    }
    electric = electric_upstream.electric
    waiting = [
        asyncio.create_task(client.get("/v1/shape", params=position, headers=auth(ALICE)))
        for _ in range(2)
    ]
    await electric.wait_until(lambda: electric.held == 1)
    await eventually(lambda: proxy.inflight.held["long_poll"] == 2)
    _, samples = await scrape(client)
    route = {"route": "/v1/shape"}
    assert value(samples, "electric_proxy_held_requests", **route, kind="long_poll") == 2
    assert value(samples, "electric_proxy_held_requests", **route, kind="sse") == 0
    assert value(samples, "electric_proxy_coalesced_requests_total", **route) == 1
    assert value(samples, "electric_proxy_coalesce_upstream_requests_total", **route) == 1
    electric.insert("todos", {"id": 9, "org_id": "acme", "title": "new", "done": False})
    for task in waiting:
        assert (await task).status == 200
    _, samples = await scrape(client)
    assert value(samples, "electric_proxy_held_requests", **route, kind="long_poll") == 0
    assert (
        value(samples, "electric_proxy_upstream_latency_seconds_count", **route, mode="long_poll")
        == 1
    )


async def test_shutdown_is_counted(aiohttp_client: Any, electric_upstream: RunningUpstream) -> None:
    metrics = Metrics()
    proxy = ShapeProxy(
        upstream=electric_upstream.url, chain=standard_chain(electric_upstream), observers=[metrics]
    )
    app, _ = app_with([proxy], metrics)
    client = await aiohttp_client(app)
    await proxy.inflight.drain(app)
    live = {"offset": "0_0", "handle": "h", "live": "true"}
    assert (await client.get("/v1/shape", params=live, headers=auth(ALICE))).status == 503
    _, samples = await scrape(client)
    route = {"route": "/v1/shape"}
    assert value(samples, "electric_proxy_drained_requests_total", **route) == 1
    assert value(
        samples, "electric_proxy_errors_total", **route, step="endpoint", status="503",
        code="shutting_down",
    ) == 1  # fmt: skip


async def test_jwks_fetches_and_outages(
    aiohttp_client: Any, aiohttp_server: Any, electric_upstream: RunningUpstream
) -> None:
    async def down(request: web.Request) -> web.Response:
        return web.Response(status=500)

    idp = web.Application()
    idp.router.add_get("/jwks", down)
    idp_server = await aiohttp_server(idp)
    jwt = JwtAuth(
        algorithms=["RS256"], jwks_url=str(idp_server.make_url("/jwks")), jwks_retry_interval=30
    )
    metrics = Metrics()
    proxy = ShapeProxy(upstream=electric_upstream.url, chain=[jwt], observers=[metrics])
    app, _ = app_with([proxy], metrics)
    client = await aiohttp_client(app)
    token = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    resp = await client.get("/v1/shape", params={"offset": "-1"}, headers=auth(token))
    assert resp.status == 503
    text, samples = await scrape(client)
    labels = {"route": "/v1/shape", "step": "JwtAuth"}
    assert value(samples, "electric_proxy_jwks_fetches_total", **labels) == 1
    assert value(samples, "electric_proxy_jwks_fetch_failures_total", **labels) == 1
    assert value(samples, "electric_proxy_jwks_keys", **labels) == 0
    assert (
        value(samples, "electric_proxy_auth_unavailable_total", **labels, outcome="rejected") == 1
    )
    assert (
        value(samples, "electric_proxy_auth_failures_total", **labels, reason="service_unavailable")
        == 1
    )
    assert str(idp_server.port) not in text and token not in text


async def test_a_streams_route_never_names_a_stream(
    aiohttp_client: Any, aiohttp_server: Any
) -> None:
    async def read(request: web.Request) -> web.Response:
        return web.Response(body=b"x", headers={"Stream-Next-Offset": "1"})

    upstream = web.Application()
    upstream.router.add_route("*", "/{tail:.*}", read)
    server = await aiohttp_server(upstream)
    metrics = Metrics()
    proxy = StreamProxy(upstream=str(server.make_url("/v1/stream/svc-test")), observers=[metrics])
    app, _ = app_with([proxy], metrics)
    client = await aiohttp_client(app)
    resp = await client.get("/v1/stream/chats/alice/room-secret-42", params={"offset": "-1"})
    assert resp.status == 200
    text, samples = await scrape(client)
    route = {"route": "/v1/stream/*"}
    assert value(samples, "electric_proxy_requests_total", **route, method="GET", status="2xx") == 1
    assert (
        value(samples, "electric_proxy_upstream_latency_seconds_count", **route, mode="catch_up")
        == 1
    )
    assert "room-secret-42" not in text and "alice" not in text and "svc-test" not in text


async def test_each_app_has_its_own_registry(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    first_metrics = Metrics()
    first_proxy = ShapeProxy(
        upstream=electric_upstream.url,
        chain=standard_chain(electric_upstream),
        observers=[first_metrics],
    )
    second_metrics = Metrics()
    second_proxy = ShapeProxy(
        upstream=electric_upstream.url,
        chain=standard_chain(electric_upstream),
        observers=[second_metrics],
    )
    first_app, first = app_with([first_proxy], first_metrics)
    second_app, second = app_with([second_proxy], second_metrics)
    assert first.registry is not second.registry
    assert first_app[METRICS] is first
    first_client = await aiohttp_client(first_app)
    second_client = await aiohttp_client(second_app)
    await first_client.get("/v1/shape", params={"offset": "-1"}, headers=auth(ALICE))
    _, samples = await scrape(second_client)
    ok = {"route": "/v1/shape", "method": "GET", "status": "2xx"}
    assert value(samples, "electric_proxy_requests_total", **ok) == 0
    _, samples = await scrape(first_client)
    assert value(samples, "electric_proxy_requests_total", **ok) == 1
    # The process-wide default registry is never touched.
    assert not any(
        name.startswith("electric_proxy")
        for name in prometheus_client.REGISTRY._names_to_collectors
    )


async def test_process_numbers_build_info_and_no_created_series(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    metrics = Metrics()
    chain = standard_chain(electric_upstream)
    proxy = ShapeProxy(upstream=electric_upstream.url, chain=chain, observers=[metrics])
    app, _ = app_with([proxy], metrics)
    client = await aiohttp_client(app)
    before = time.time()
    # A counter child and a histogram child exist: each would bring a _created series.
    resp = await client.get("/v1/shape", params={"offset": "-1"}, headers=auth(ALICE))
    assert resp.status == 200
    text, samples = await scrape(client)

    # What an operator needs for the two-sockets-per-held-request risk, read from /proc.
    open_fds = value(samples, "process_open_fds")
    assert 0 < open_fds < value(samples, "process_max_fds")
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_cpu_seconds_total") > 0
    assert 0 < value(samples, "process_start_time_seconds") <= before
    build = {"version": electric_proxy.__version__, "python": platform.python_version()}
    assert value(samples, "electric_proxy_build_info", **build, aiohttp=aiohttp.__version__) == 1

    # No _created series in either exposition, and none in the process-wide default either
    # (the switch that drops them is this registry's, not prometheus_client's global one).
    assert "_created" not in text
    openmetrics = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    om_text = await openmetrics.text()
    assert "electric_proxy_requests_total{" in om_text and "_created" not in om_text
    elsewhere = prometheus_client.Counter("elsewhere", "", registry=None)
    assert any(s.name == "elsewhere_created" for s in next(iter(elsewhere.collect())).samples)


async def test_a_listener_of_its_own(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    metrics = Metrics()
    proxy = ShapeProxy(
        upstream=electric_upstream.url, chain=standard_chain(electric_upstream), observers=[metrics]
    )
    app = web.Application()
    proxy.setup(app)
    metrics.setup(app)
    app.cleanup_ctx.append(metrics.listener("127.0.0.1", 0, "/internal/metrics"))
    client = await aiohttp_client(app)
    assert (await client.get("/metrics")).status == 404  # not on the public listener
    await client.get("/v1/shape", params={"offset": "-1"}, headers=auth(ALICE))
    port = metrics.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/internal/metrics"
        async with session.get(url) as resp:
            assert resp.status == 200
            text = await resp.text()
        async with session.get(url, headers={"Accept": "application/openmetrics-text"}) as resp:
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert 'electric_proxy_requests_total{method="GET",route="/v1/shape",status="2xx"} 1.0' in text


def config(**sections: str) -> dict[str, Any]:
    import tomllib

    body = '[upstream]\nurl = "http://electric:3000/v1/shape"\n' + "".join(
        f"[{name}]\n{textwrap.dedent(text)}\n" for name, text in sections.items()
    )
    return tomllib.loads(body)


def test_metrics_section() -> None:
    parsed = parse_config(config(metrics="port = 9500\nhost = '0.0.0.0'\n"))
    assert parsed.metrics is not None and parsed.metrics.port == 9500
    assert parsed.describe()["metrics"]["host"] == "0.0.0.0"
    assert parse_config(config()).metrics is None


@pytest.mark.parametrize(
    ("sections", "problem"),
    [
        ({"metrics": "listener = false"}, "metrics: with `listener = false`, set"),
        ({"metrics": "main_path = 'v1'"}, "metrics.main_path: expected a path"),
        ({"metrics": "main_path = '/v1/shape'"}, "metrics.main_path: /v1/shape is a proxied route"),
        ({"metrics": "main_path = '/readyz'"}, "metrics.main_path: /readyz is health.readyz"),
        ({"metrics": "prot = 1"}, "metrics.prot: unknown option 'prot', did you mean 'port'?"),
        ({"health": "healthz = '/v1/shape'"}, "health.healthz: /v1/shape is a proxied route"),
        ({"health": "readyz = '/healthz'"}, "health: healthz and readyz must be"),
    ],
)
def test_bad_metrics_and_health_sections(sections: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config(**sections))
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


async def test_a_configured_app_serves_metrics_health_and_the_proxy(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    raw = {
        "upstream": {"url": electric_upstream.url},
        "chain": [
            {"use": "policy", "shapes": {"todos": {}}},
            {"use": "credentials", "secret": electric_upstream.secret},
        ],
        "metrics": {"listener": False, "main_path": "/ops/metrics"},
        "health": {"readyz": "/ops/ready"},
    }
    client = await aiohttp_client(parse_config(raw).app())
    resp = await client.get("/v1/shape", params={"offset": "-1", "table": "todos"})
    assert resp.status == 200
    assert (await client.get("/ops/ready")).status == 200
    assert (await client.get("/healthz")).status == 200
    _, samples = await scrape(client, "/ops/metrics")
    ok = {"route": "/v1/shape", "method": "GET", "status": "2xx"}
    assert value(samples, "electric_proxy_requests_total", **ok) == 1


def test_without_prometheus_client_only_metrics_are_refused() -> None:
    script = textwrap.dedent(
        """
        import importlib.util, sys
        sys.modules["prometheus_client"] = None
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda n, *a: None if n == "prometheus_client" else real(n, *a)

        from electric_proxy import ConfigError, Metrics, ShapeProxy, parse_config
        from electric_proxy.metrics import MetricsUnavailable

        plain = {"upstream": {"url": "http://electric:3000/v1/shape"}}
        parse_config(plain).app()
        try:
            parse_config({**plain, "metrics": {}})
        except ConfigError as exc:
            print(exc.problems)
        try:
            Metrics()
        except MetricsUnavailable as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "metrics: needs the prometheus-client package" in result.stdout
    assert "pip install 'electric-proxy[metrics]'" in result.stdout


async def test_answers_raised_as_aiohttp_exceptions_are_counted_by_their_status(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    async def redirect(request: web.Request, handler: Any) -> web.StreamResponse:
        if "moved" in request.query:
            raise web.HTTPFound("/elsewhere")
        if "broken" in request.query:
            raise RuntimeError("a bug in a step")
        return await handler(request)

    metrics = Metrics()
    proxy = ShapeProxy(upstream=electric_upstream.url, chain=[redirect], observers=[metrics])
    app, _ = app_with([proxy], metrics)
    client = await aiohttp_client(app)
    resp = await client.get("/v1/shape", params={"moved": "1"}, allow_redirects=False)
    assert resp.status == 302
    assert (await client.get("/v1/shape", params={"broken": "1"})).status == 500
    _, samples = await scrape(client)
    route = {"route": "/v1/shape", "method": "GET"}
    assert value(samples, "electric_proxy_requests_total", **route, status="3xx") == 1
    assert value(samples, "electric_proxy_requests_total", **route, status="5xx") == 1


class CountingStep(Step):
    """A third party's step that keeps a number of its own."""

    seen: list[int] = Field(default_factory=list)

    def metrics(self) -> Iterator[StepMetric]:
        yield StepMetric(
            "acme_things", "counter", "Things a step counted", len(self.seen), {"kind": "x"}
        )
        yield StepMetric("acme_level", "gauge", "A level", 3.5)

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.seen.append(1)
        return await handler(request)


async def test_a_step_reports_its_own_numbers_through_the_hook(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    step = CountingStep()
    metrics = Metrics()
    proxy = ShapeProxy(
        upstream=electric_upstream.url,
        chain=[step, *standard_chain(electric_upstream)],
        observers=[metrics],
    )
    app, _ = app_with([proxy], metrics)
    client = await aiohttp_client(app)
    for _ in range(3):
        assert (await client.get("/v1/shape?offset=-1", headers=auth(ALICE))).status == 200
    _, samples = await scrape(client)
    route = {"route": "/v1/shape", "step": "CountingStep"}
    assert value(samples, "acme_things_total", kind="x", **route) == 3
    assert value(samples, "acme_level", **route) == 3.5
