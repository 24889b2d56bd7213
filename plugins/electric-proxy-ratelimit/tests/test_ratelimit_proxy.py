"""The step in a real proxy on a real socket, after bearer auth, on both stores.

Every test runs twice: on the in-memory store and on a real redis-server (see conftest).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from electric_proxy_ratelimit import RateLimit
from ratelimit_fixtures import (  # noqa: F401 (fixtures)
    fixture_electric_upstream,
    fixture_limiter,
    fixture_redis_server,
)
from ratelimit_support import SHAPE, add_todo, chain, finish, live_shape

from electric_proxy import Credentials, RequestId, ShapePolicy, ShapeProxy, StreamProxy
from electric_proxy.testing import ALICE, BOB, RunningUpstream, auth, two_users

Limiter = Callable[..., RateLimit]
CATCH_UP = {"offset": "-1"}


async def test_a_burst_then_429_with_retry_after_and_nothing_upstream(
    proxy_client: Any, electric_upstream: RunningUpstream, limiter: Limiter
) -> None:
    client = await proxy_client(chain(electric_upstream, limiter(rate=0.5, burst=3)))
    for _ in range(3):
        resp = await client.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))
        assert resp.status == 200, await resp.text()
    sent = len(electric_upstream.electric.requests)

    resp = await client.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "2"  # one token every 2 s
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert body["error"] == "rate_limited" and body["limit"] == "rate"
    assert body["retry_after"] == 2
    assert len(electric_upstream.electric.requests) == sent


async def test_retry_after_is_the_time_until_the_next_token(
    proxy_client: Any, electric_upstream: RunningUpstream, limiter: Limiter
) -> None:
    client = await proxy_client(chain(electric_upstream, limiter(rate=0.25, burst=1)))
    assert (await client.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))).status == 200
    resp = await client.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))
    assert resp.status == 429 and resp.headers["Retry-After"] == "4"


async def test_tokens_come_back_at_the_rate(
    proxy_client: Any, electric_upstream: RunningUpstream, limiter: Limiter
) -> None:
    client = await proxy_client(chain(electric_upstream, limiter(rate=2, burst=1)))
    assert (await client.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))).status == 200
    assert (await client.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))).status == 429
    await asyncio.sleep(0.6)  # more than a token's worth: the bucket holds one
    assert (await client.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))).status == 200
    assert (await client.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))).status == 429


async def test_each_principal_has_its_own_bucket(
    proxy_client: Any, electric_upstream: RunningUpstream, limiter: Limiter
) -> None:
    client = await proxy_client(chain(electric_upstream, limiter(rate=0.1, burst=2)))
    for _ in range(2):
        assert (await client.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))).status == 200
    assert (await client.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))).status == 429
    for _ in range(2):
        resp = await client.get(SHAPE, params=CATCH_UP, headers=auth(BOB))
        assert resp.status == 200
        rows = [m["value"] for m in await resp.json() if "value" in m]
        assert {r["org_id"] for r in rows} == {"globex"}
    assert (await client.get(SHAPE, params=CATCH_UP, headers=auth(BOB))).status == 429


async def test_each_route_has_its_own_bucket_and_may_have_its_own_limits(
    aiohttp_client: Any, electric_upstream: RunningUpstream, limiter: Limiter
) -> None:
    step = limiter(rate=0.1, burst=1, routes={"/b/shape": {"burst": 3}})
    app = web.Application()
    for path in ("/a/shape", "/b/shape"):  # one step instance on two routes of one app
        ShapeProxy(
            upstream=electric_upstream.url, chain=chain(electric_upstream, step), path=path
        ).setup(app)
    client = await aiohttp_client(app)

    async def status(path: str) -> int:
        resp = await client.get(path, params=CATCH_UP, headers=auth(ALICE))
        await resp.read()
        status: int = resp.status
        return status

    assert [await status("/a/shape") for _ in range(2)] == [200, 429]
    assert [await status("/b/shape") for _ in range(4)] == [200, 200, 200, 429]
    assert step.stats()["limited"] == 2


async def test_without_a_principal_the_client_address_is_the_key(
    proxy_client: Any, electric_upstream: RunningUpstream, limiter: Limiter
) -> None:
    """Before authentication, callers are told apart by address (here through a trusted
    proxy's X-Forwarded-For); refused requests never reach the authenticator either."""
    client = await proxy_client(
        [
            RequestId(trusted_proxies=["127.0.0.0/8"]),
            limiter(rate=0.1, burst=2),
            two_users(),
            ShapePolicy(shapes={"todos": {"where": "org_id = :org_id"}}),
            Credentials(secret=electric_upstream.secret),
        ]
    )
    first = {"X-Forwarded-For": "203.0.113.7"}
    second = {"X-Forwarded-For": "198.51.100.9"}
    assert (await client.get(SHAPE, params=CATCH_UP, headers=first)).status == 401
    assert (await client.get(SHAPE, params=CATCH_UP, headers={**first, **auth(ALICE)})).ok
    assert (await client.get(SHAPE, params=CATCH_UP, headers=first)).status == 429
    assert (await client.get(SHAPE, params=CATCH_UP, headers=second)).status == 401


async def test_live_requests_take_no_token_but_a_slot(
    proxy_client: Any, electric_upstream: RunningUpstream, limiter: Limiter
) -> None:
    step = limiter(rate=0.01, burst=3, max_live=2, live_retry_after=7)
    client = await proxy_client(chain(electric_upstream, step))
    alice = await live_shape(client, ALICE, electric_upstream, "acme")  # 2 tokens

    held = [alice.hold(0), alice.hold(1)]
    electric = electric_upstream.electric
    await electric.wait_until(lambda: electric.held == 2)
    sent = len(electric.requests)
    refused = await alice.probe()
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "7"
    assert (await refused.json())["limit"] == "live"
    assert len(electric.requests) == sent

    # The one token left is still there: live requests took none.
    assert (await client.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))).status == 200
    assert (await client.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))).status == 429

    add_todo(electric_upstream, "acme")  # both long-polls answer; their slots come back
    assert await finish(held) == [200, 200]
    assert (await alice.admitted_within()).status == 200
    assert step.stats()["live_limited"] >= 1


async def test_live_slots_are_per_principal(
    proxy_client: Any, electric_upstream: RunningUpstream, limiter: Limiter
) -> None:
    client = await proxy_client(chain(electric_upstream, limiter(burst=10, max_live=1)))
    alice = await live_shape(client, ALICE, electric_upstream, "acme")
    bob = await live_shape(client, BOB, electric_upstream, "globex")
    held = alice.hold(0)
    electric = electric_upstream.electric
    await electric.wait_until(lambda: electric.held == 1)
    assert (await alice.probe()).status == 429
    assert (await bob.probe()).status == 200
    add_todo(electric_upstream, "acme")
    assert await finish([held]) == [200]


async def test_a_live_request_the_client_abandons_gives_its_slot_back(
    proxy_client: Any, electric_upstream: RunningUpstream, limiter: Limiter
) -> None:
    client = await proxy_client(chain(electric_upstream, limiter(burst=10, max_live=1)))
    alice = await live_shape(client, ALICE, electric_upstream, "acme")
    electric = electric_upstream.electric
    held = alice.hold(0)
    await electric.wait_until(lambda: electric.held == 1)
    assert (await alice.probe()).status == 429

    held.cancel()  # the client goes away mid long-poll
    await electric.wait_until(lambda: electric.held == 0)
    assert (await alice.admitted_within()).status == 200


async def test_the_slot_is_held_while_the_body_streams(
    proxy_client: Any, electric_upstream: RunningUpstream, limiter: Limiter
) -> None:
    """An SSE reply is streamed after every step has returned: the slot must outlive the
    handler and end with the body."""
    client = await proxy_client(chain(electric_upstream, limiter(burst=10, max_live=1)))
    alice = await live_shape(client, ALICE, electric_upstream, "acme")
    params = {**alice.held_params(0), "live_sse": "true"}
    stream = await client.get(
        SHAPE, params=params, headers={**alice.headers, "Accept": "text/event-stream"}
    )
    assert stream.status == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    add_todo(electric_upstream, "acme")
    assert b"data:" in await stream.content.readuntil(b"\n\n")  # streaming, handler long done
    assert (await alice.probe()).status == 429

    stream.close()
    assert (await alice.admitted_within()).status == 200


async def test_a_finished_live_request_frees_its_slot_on_a_kept_alive_connection(
    proxy_client: Any, electric_upstream: RunningUpstream, limiter: Limiter
) -> None:
    """aiohttp's ``request.task`` lives as long as the connection; the slot must not."""
    client = await proxy_client(chain(electric_upstream, limiter(burst=10, max_live=1)))
    alice = await live_shape(client, ALICE, electric_upstream, "acme")
    params = {"offset": "0_0", "handle": alice.handle, "live": "true"}
    opened = 0

    async def count(*_: Any) -> None:
        nonlocal opened
        opened += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(count)
    statuses = []
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        for n in range(5):
            url = client.make_url(SHAPE)
            query = {**params, "cursor": str(n)}
            async with session.get(url, params=query, headers=alice.headers) as resp:
                await resp.read()
                statuses.append(resp.status)
    assert statuses == [200] * 5
    assert opened == 1  # one connection, kept alive throughout


async def test_preflights_are_not_counted(
    proxy_client: Any, electric_upstream: RunningUpstream, limiter: Limiter
) -> None:
    client = await proxy_client(
        [
            limiter(rate=0.1, burst=1),
            two_users(),
            ShapePolicy(shapes={"todos": {"where": "org_id = :org_id"}}),
            Credentials(secret=electric_upstream.secret),
        ]
    )
    for _ in range(3):
        assert (await client.options(SHAPE)).status != 429
    assert (await client.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))).status == 200


async def test_on_a_streams_endpoint_the_route_is_the_endpoint(
    aiohttp_client: Any, aiohttp_server: Any, limiter: Limiter
) -> None:
    """Every stream under ``/v1/stream`` is one route; ``live=long-poll`` is a live read."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def durable_streams(request: web.Request) -> web.StreamResponse:
        if request.query.get("live") == "long-poll":
            arrived.set()
            await release.wait()
            return web.Response(status=204)
        return web.json_response([])

    upstream = web.Application()
    upstream.router.add_get("/{tail:.*}", durable_streams)
    server = await aiohttp_server(upstream)
    step = limiter(rate=0.1, burst=10, routes={"/v1/stream": {"burst": 2, "max_live": 1}})
    proxy = StreamProxy(upstream=str(server.make_url("/streams")), chain=[two_users(), step])
    client = await aiohttp_client(proxy.app())

    async def read(path: str, **query: str) -> int:
        resp = await client.get(path, params={"offset": "-1", **query}, headers=auth(ALICE))
        await resp.read()
        status: int = resp.status
        return status

    assert await read("/v1/stream/a") == 200
    assert await read("/v1/stream/b") == 200
    assert await read("/v1/stream/c") == 429  # the route's burst of 2, shared by all streams
    held = asyncio.ensure_future(read("/v1/stream/a", live="long-poll"))
    await asyncio.wait_for(arrived.wait(), 5)
    assert await read("/v1/stream/b", live="long-poll") == 429
    release.set()
    assert await held == 204


async def test_refusals_reach_metrics_through_the_step_hook(
    aiohttp_client: Any, electric_upstream: RunningUpstream, limiter: Limiter
) -> None:
    from electric_proxy import Metrics

    step = limiter(rate=0.1, burst=1)
    metrics = Metrics()
    proxy = ShapeProxy(
        upstream=electric_upstream.url, chain=chain(electric_upstream, step), observers=[metrics]
    )
    app = web.Application()
    proxy.setup(app)
    metrics.setup(app, path="/metrics")
    client = await aiohttp_client(app)
    for _ in range(3):
        await (await client.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))).read()
    text = await (await client.get("/metrics")).text()
    assert (
        'electric_proxy_rate_limited_total{kind="rate",route="/v1/shape",step="RateLimit"} 2.0'
        in text
    )
    assert "electric_proxy_rate_limit_backend_errors_total" in text
