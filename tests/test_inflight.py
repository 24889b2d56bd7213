"""Held live requests: counted while held, ended cleanly when the app shuts down."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from conftest import standard_chain
from multidict import MultiDict

from electric_proxy import UPSTREAM_STATUS, Cors, ShapeProxy, UpstreamSettings
from electric_proxy.inflight import live_kind
from electric_proxy.testing import ALICE, RunningUpstream, auth, eventually


@pytest.mark.parametrize(
    ("query", "accept", "kind"),
    [
        ({"offset": "-1"}, "", None),
        ({"live": "false"}, "", None),
        ({"live": "true"}, "", "long_poll"),
        ({"live": "true", "live_sse": "true"}, "", "sse"),
        ({"live": "true", "experimental_live_sse": "true"}, "", "sse"),
        ({"live": "true"}, "text/event-stream", "sse"),
        ({"live": "long-poll"}, "", "long_poll"),
        ({"live": "sse"}, "", "sse"),
    ],
)
def test_live_kind(query: dict[str, str], accept: str, kind: str | None) -> None:
    assert live_kind(MultiDict(query), accept) == kind


def test_a_repeated_live_key_still_counts_as_live() -> None:
    assert live_kind(MultiDict([("live", "false"), ("live", "long-poll")])) == "long_poll"


async def synced(client: Any) -> dict[str, str]:
    resp = await client.get("/v1/shape", params={"offset": "-1"}, headers=auth(ALICE))
    assert resp.status == 200
    await resp.read()
    return {
        "handle": resp.headers["electric-handle"],
        "offset": resp.headers["electric-offset"],
    }


async def held_long_poll(
    client: Any, upstream: RunningUpstream, headers: dict[str, str] | None = None
) -> asyncio.Task[Any]:
    """Sync Alice, then send her live request and return once Electric holds it."""
    position = await synced(client)
    live = asyncio.create_task(
        client.get("/v1/shape", params={**position, "live": "true"}, headers=headers or auth(ALICE))
    )
    electric = upstream.electric
    await electric.wait_until(lambda: electric.held == 1)
    return live


async def proxy(
    aiohttp_client: Any, upstream: RunningUpstream, chain: list[Any] | None = None
) -> tuple[Any, ShapeProxy]:
    shape_proxy = ShapeProxy(
        upstream=UpstreamSettings(url=upstream.url),
        chain=chain if chain is not None else standard_chain(upstream),
    )
    client = await aiohttp_client(shape_proxy.app())
    return client, shape_proxy


def _coroutines_held(task: asyncio.Task[Any]) -> list[str]:
    """The coroutines a held request keeps alive, outermost first, down to the first
    awaitable that is not a coroutine (aiohttp's request context, a future)."""
    names = []
    coro: Any = task.get_coro()
    while coro is not None and hasattr(coro, "cr_frame"):
        names.append(coro.cr_code.co_qualname)
        coro = coro.cr_await
    return names


async def _held_coroutines(
    aiohttp_client: Any, upstream: RunningUpstream, chain: list[Any]
) -> list[str]:
    client, shape_proxy = await proxy(aiohttp_client, upstream, chain)
    live = await held_long_poll(client, upstream)
    (hold,) = shape_proxy.inflight._holds
    held = _coroutines_held(hold.task)
    live.cancel()
    await upstream.electric.wait_until(lambda: upstream.electric.held == 0)
    return held


async def test_a_held_request_keeps_one_frame_for_all_phased_steps(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    phased = standard_chain(electric_upstream)  # bearer auth, policy, credentials
    cors = Cors(allow_origins=["https://app.example"])

    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        return await handler(request)

    three = await _held_coroutines(aiohttp_client, electric_upstream, phased)
    four = await _held_coroutines(aiohttp_client, electric_upstream, [cors, *phased])
    with_middleware = await _held_coroutines(
        aiohttp_client, electric_upstream, [middleware, cors, *phased]
    )
    assert three == four
    assert four.count("_in_phases.<locals>.run") == 1
    # A step written as a middleware is around the rest while the request is held.
    assert len(with_middleware) == len(four) + 2
    assert any("middleware" in name for name in with_middleware)


async def test_held_requests_are_counted(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    client, shape_proxy = await proxy(aiohttp_client, electric_upstream)
    live = await held_long_poll(client, electric_upstream)
    electric = electric_upstream.electric
    assert shape_proxy.inflight.held == {"long_poll": 1, "sse": 0}
    electric.insert("todos", {"id": 9, "org_id": "acme", "title": "new", "done": False})
    resp = await live
    assert resp.status == 200
    await resp.read()
    assert shape_proxy.inflight.held == {"long_poll": 0, "sse": 0}


async def test_shutdown_answers_a_waiting_long_poll_with_a_retryable_503(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    chain = [Cors(allow_origins=["https://app.example"]), *standard_chain(electric_upstream)]
    client, shape_proxy = await proxy(aiohttp_client, electric_upstream, chain)
    headers = {**auth(ALICE), "Origin": "https://app.example"}
    live = await held_long_poll(client, electric_upstream, headers)
    electric = electric_upstream.electric
    cancelled = electric.cancelled
    await client.app.shutdown()
    resp = await asyncio.wait_for(live, 2)
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "0"
    assert (await resp.json())["error"] == "shutting_down"
    # Made inside the chain: the steps still decorate it, so a browser can read it.
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    # Its upstream request was cancelled with it.
    await electric.wait_until(lambda: electric.cancelled == cancelled + 1)
    assert shape_proxy.inflight.drained == 1
    assert shape_proxy.inflight.held == {"long_poll": 0, "sse": 0}


async def test_shutdown_ends_coalesced_long_polls_and_their_shared_request(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    client, shape_proxy = await proxy(aiohttp_client, electric_upstream)
    position = await synced(client)
    electric = electric_upstream.electric
    waiting = [
        asyncio.create_task(
            client.get("/v1/shape", params={**position, "live": "true"}, headers=auth(ALICE))
        )
        for _ in range(3)
    ]
    await electric.wait_until(lambda: electric.held == 1)
    await eventually(lambda: shape_proxy.inflight.held["long_poll"] == 3)
    await client.app.shutdown()
    for task in waiting:
        assert (await asyncio.wait_for(task, 2)).status == 503
    await electric.wait_until(lambda: electric.held == 0)


async def test_shutdown_ends_an_sse_stream_cleanly(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    client, shape_proxy = await proxy(aiohttp_client, electric_upstream)
    position = await synced(client)
    electric = electric_upstream.electric
    resp = await client.get(
        "/v1/shape",
        params={**position, "live": "true", "live_sse": "true"},
        headers={**auth(ALICE), "Accept": "text/event-stream"},
    )
    assert resp.status == 200
    await electric.wait_until(lambda: electric.held == 1)
    assert shape_proxy.inflight.held["sse"] == 1
    electric.insert("todos", {"id": 9, "org_id": "acme", "title": "streamed", "done": False})
    first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 2)
    assert b"streamed" in first
    await client.app.shutdown()
    # The body ends as Electric ends it every 60 s: complete chunks, then a clean end.
    rest = await asyncio.wait_for(resp.read(), 2)
    assert rest == b"" or rest.endswith(b"\n\n")
    await electric.wait_until(lambda: electric.held == 0)
    assert shape_proxy.inflight.held["sse"] == 0


async def test_requests_arriving_while_draining_end_at_once(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    client, shape_proxy = await proxy(aiohttp_client, electric_upstream)
    position = await synced(client)
    await shape_proxy.inflight.drain(client.app)
    resp = await client.get("/v1/shape", params={**position, "live": "true"}, headers=auth(ALICE))
    assert resp.status == 503
    # Catch-up requests are not affected.
    resp = await client.get("/v1/shape", params={"offset": "-1"}, headers=auth(ALICE))
    assert resp.status == 200


async def test_a_client_leaving_while_draining_is_still_a_disconnect(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    client, shape_proxy = await proxy(aiohttp_client, electric_upstream)
    live = await held_long_poll(client, electric_upstream)
    electric = electric_upstream.electric
    live.cancel()
    await electric.wait_until(lambda: electric.held == 0)
    assert shape_proxy.inflight.held["long_poll"] == 0
    assert shape_proxy.inflight.drained == 0


async def test_the_upstream_status_is_recorded(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    seen: list[int | None] = []

    async def look(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        seen.append(request.get(UPSTREAM_STATUS))
        return response

    client, _ = await proxy(aiohttp_client, electric_upstream, [look])
    resp = await client.get("/v1/shape", params={"offset": "-1", "table": "todos"})
    assert resp.status == 401  # no secret: Electric refused
    assert seen == [401]


async def test_a_proxy_mounted_as_a_sub_app_is_drained_with_its_parent(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    shape_proxy = ShapeProxy(
        upstream=electric_upstream.url, chain=standard_chain(electric_upstream)
    )
    root = web.Application()
    root.add_subapp("/electric", shape_proxy.app())
    client = await aiohttp_client(root)
    resp = await client.get("/electric/v1/shape", params={"offset": "-1"}, headers=auth(ALICE))
    position = {
        "handle": resp.headers["electric-handle"],
        "offset": resp.headers["electric-offset"],
    }
    electric = electric_upstream.electric
    live = asyncio.create_task(
        client.get("/electric/v1/shape", params={**position, "live": "true"}, headers=auth(ALICE))
    )
    await electric.wait_until(lambda: electric.held == 1)
    await root.shutdown()
    assert (await asyncio.wait_for(live, 2)).status == 503
