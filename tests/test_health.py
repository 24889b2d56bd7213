"""/healthz and /readyz: liveness, and readiness checked through the proxy's own pool."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from conftest import standard_chain
from joserfc.jwk import RSAKey
from yarl import URL

from electric_proxy import Health, JwtAuth, ShapeProxy, Step, StreamProxy, UpstreamSettings
from electric_proxy.endpoint import Endpoint
from electric_proxy.health import HEALTH
from electric_proxy.shapes import electric_health_url
from electric_proxy.testing import ALICE, RunningUpstream, auth

RSA = RSAKey.generate_key(2048, auto_kid=True)


def app_with(endpoints: list[Endpoint], **options: Any) -> web.Application:
    app = web.Application()
    for endpoint in endpoints:
        endpoint.setup(app)
    Health(endpoints, **options).setup(app)
    return app


def health_hits(upstream: RunningUpstream) -> int:
    return sum(r.path == "/v1/health" for r in upstream.electric.requests)


@pytest.mark.parametrize(
    ("shape_url", "health_url"),
    [
        ("http://electric:3000/v1/shape", "http://electric:3000/v1/health"),
        ("https://edge.example/electric/v1/shape", "https://edge.example/electric/v1/health"),
        ("http://electric:3000/custom", "http://electric:3000/v1/health"),
    ],
)
def test_electric_health_url(shape_url: str, health_url: str) -> None:
    assert str(electric_health_url(URL(shape_url))) == health_url


async def test_healthz_and_readyz(aiohttp_client: Any, electric_upstream: RunningUpstream) -> None:
    proxy = ShapeProxy(upstream=electric_upstream.url, chain=standard_chain(electric_upstream))
    client = await aiohttp_client(app_with([proxy]))
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}
    assert resp.headers["Cache-Control"] == "no-store"
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ready", "checks": {"upstream /v1/shape": "ok"}}
    assert health_hits(electric_upstream) == 1
    # Electric's health route needs no secret, and the probe sends none.
    probe = next(r for r in electric_upstream.electric.requests if r.path == "/v1/health")
    assert probe.query_string == ""


async def test_readyz_says_which_check_failed_without_the_url(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    url = URL(electric_upstream.url)
    proxy = ShapeProxy(upstream=electric_upstream.url, chain=standard_chain(electric_upstream))
    client = await aiohttp_client(app_with([proxy], cache=0))
    await electric_upstream.server.close()
    resp = await client.get("/readyz")
    text = await resp.text()
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["upstream /v1/shape"].startswith("the upstream cannot be reached")
    for leak in (str(url.port), "127.0.0.1", "http", electric_upstream.secret):
        assert leak not in text
    assert (await client.get("/healthz")).status == 200  # the process itself is fine


async def test_electric_starting_up_is_not_ready(aiohttp_client: Any, aiohttp_server: Any) -> None:
    async def starting(request: web.Request) -> web.Response:
        return web.json_response({"status": "starting"}, status=202)

    electric = web.Application()
    electric.router.add_get("/v1/health", starting)
    server = await aiohttp_server(electric)
    proxy = ShapeProxy(upstream=str(server.make_url("/v1/shape")))
    client = await aiohttp_client(app_with([proxy]))
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["checks"] == {
        "upstream /v1/shape": "Electric's health check answered 202"
    }


async def test_a_slow_upstream_fails_the_check_in_time(
    aiohttp_client: Any, aiohttp_server: Any
) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({"status": "active"})

    electric = web.Application()
    electric.router.add_get("/v1/health", slow)
    server = await aiohttp_server(electric)
    proxy = ShapeProxy(upstream=str(server.make_url("/v1/shape")))
    client = await aiohttp_client(app_with([proxy], timeout=0.2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await client.get("/readyz")
    assert loop.time() - started < 2
    assert (await resp.json())["checks"]["upstream /v1/shape"] == (
        "the upstream did not answer in time"
    )


async def test_a_flood_of_probes_costs_one_upstream_request(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    proxy = ShapeProxy(upstream=electric_upstream.url)
    client = await aiohttp_client(app_with([proxy], cache=0.3))
    answers = await asyncio.gather(*(client.get("/readyz") for _ in range(20)))
    assert {r.status for r in answers} == {200}
    assert health_hits(electric_upstream) == 1
    await asyncio.sleep(0.35)
    assert (await client.get("/readyz")).status == 200
    assert health_hits(electric_upstream) == 2


async def test_a_jwt_step_is_ready_once_its_keys_load(
    aiohttp_client: Any, aiohttp_server: Any, electric_upstream: RunningUpstream
) -> None:
    status = {"code": 500}

    async def keys(request: web.Request) -> web.Response:
        if status["code"] != 200:
            return web.Response(status=500)
        return web.json_response({"keys": [RSA.as_dict(private=False)]})

    idp = web.Application()
    idp.router.add_get("/jwks", keys)
    idp_server = await aiohttp_server(idp)
    auth = JwtAuth(
        algorithms=["RS256"], jwks_url=str(idp_server.make_url("/jwks")), jwks_retry_interval=0
    )
    proxy = ShapeProxy(upstream=electric_upstream.url, chain=[auth])
    client = await aiohttp_client(app_with([proxy], cache=0))
    resp = await client.get("/readyz")
    assert resp.status == 503
    checks = (await resp.json())["checks"]
    assert checks == {
        "upstream /v1/shape": "ok",
        "JwtAuth /v1/shape": "the identity provider's signing keys could not be fetched",
    }
    status["code"] = 200
    resp = await client.get("/readyz")
    assert resp.status == 200, await resp.text()
    assert auth.jwks is not None and len(auth.jwks.keys) == 1


async def test_any_step_can_contribute(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    class Warming(Step):
        warm: bool = False

        async def __call__(self, request: web.Request, handler: Any) -> web.StreamResponse:
            return await handler(request)

        async def ready(self) -> str | None:
            return None if self.warm else "the cache is warming up"

    proxy = ShapeProxy(upstream=electric_upstream.url, chain=[Warming()])
    client = await aiohttp_client(app_with([proxy]))
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["checks"]["Warming /v1/shape"] == "the cache is warming up"


async def test_readiness_of_a_streams_upstream(aiohttp_client: Any, aiohttp_server: Any) -> None:
    seen: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        return web.Response(status=404)

    streams_server = web.Application()
    streams_server.router.add_route("*", "/{tail:.*}", anything)
    server = await aiohttp_server(streams_server)
    proxy = StreamProxy(upstream=str(server.make_url("/v1/stream/svc-test")))
    client = await aiohttp_client(app_with([proxy], cache=0))
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ready", "checks": {"upstream /v1/stream/*": "ok"}}
    assert seen == ["HEAD /v1/stream/svc-test"]
    await server.close()
    resp = await client.get("/readyz")
    assert resp.status == 503


async def test_not_ready_while_shutting_down(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    proxy = ShapeProxy(upstream=electric_upstream.url)
    client = await aiohttp_client(app_with([proxy], cache=0))
    await proxy.inflight.drain(client.app)
    resp = await client.get("/readyz")
    assert (await resp.json())["checks"]["upstream /v1/shape"] == "shutting down"


async def test_check_upstream_off_stays_ready_while_electric_is_down(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    """Without the upstream check, a down Electric leaves the replica ready (its clients
    get the proxy's JSON 502) and no probe reaches Electric; shutting down still counts."""
    chain = standard_chain(electric_upstream)
    proxy = ShapeProxy(upstream=electric_upstream.url, chain=chain)
    client = await aiohttp_client(app_with([proxy], cache=0, check_upstream=False))
    await electric_upstream.server.close()
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ready", "checks": {"serving /v1/shape": "ok"}}
    assert health_hits(electric_upstream) == 0
    params = {"table": "todos", "offset": "-1"}
    shape = await client.get("/v1/shape", params=params, headers=auth(ALICE))
    assert shape.status == 502  # the proxy's own JSON answer, which a client retries
    assert (await shape.json())["error"] == "upstream_unavailable"
    await proxy.inflight.drain(client.app)
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["checks"] == {"serving /v1/shape": "shutting down"}


async def test_stop_refuses_readiness_at_once_despite_the_cache(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    """After ``Health.stop()`` (SIGTERM with a drain delay) readiness is 503 on the next
    probe, even though a ready answer is cached for a minute; liveness stays 200."""
    proxy = ShapeProxy(upstream=electric_upstream.url)
    app = app_with([proxy], cache=60)
    client = await aiohttp_client(app)
    assert (await client.get("/readyz")).status == 200
    health = app[HEALTH]
    health.stop()
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert await resp.json() == {
        "status": "unavailable",
        "checks": {"process": "shutting down"},
    }
    assert (await client.get("/healthz")).status == 200
    assert health_hits(electric_upstream) == 1


def test_health_paths_cannot_shadow_a_proxied_route() -> None:
    shape = ShapeProxy(upstream="http://electric:3000/v1/shape", path="/healthz")
    with pytest.raises(ValueError, match="/healthz is a proxied route"):
        Health([shape])
    streams = StreamProxy(upstream="http://streams:4437/v1/stream", path="/ops")
    with pytest.raises(ValueError, match="/ops/readyz is a proxied route"):
        Health([streams], readyz="/ops/readyz")
    with pytest.raises(ValueError, match="different paths"):
        Health([], healthz="/up", readyz="/up")


def test_upstream_settings_keep_their_path() -> None:
    proxy = ShapeProxy(upstream=UpstreamSettings(url="http://electric:3000"))
    assert electric_health_url(proxy.forwarder.url).path == "/v1/health"
