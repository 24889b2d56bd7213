"""The SERVER span lasts as long as the response: holds, streamed bodies, and clients that
leave or upstreams that fail half-way."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from opentelemetry.trace import SpanKind, StatusCode
from otel_kit import Recorder, shape_chain

from electric_proxy import Handler, ShapeProxy
from electric_proxy.testing import ALICE, RunningUpstream, auth

CANCELLED = "asyncio.exceptions.CancelledError"


async def caught_up(client: TestClient[Any, Any]) -> dict[str, str]:
    """Sync the todos shape to its end; the query for the next live request."""
    params = {"table": "todos", "offset": "-1"}
    while True:
        resp = await client.get("/v1/shape", params=params, headers=auth(ALICE))
        assert resp.status == 200
        await resp.read()
        params = {
            "table": "todos",
            "handle": resp.headers["electric-handle"],
            "offset": resp.headers["electric-offset"],
        }
        if "electric-up-to-date" in resp.headers:
            return {**params, "live": "true"}


async def traced_client(
    proxy_client: Any, electric_upstream: RunningUpstream, *steps: Any
) -> tuple[Recorder, TestClient[Any, Any], dict[str, str]]:
    spans = Recorder()
    client = await proxy_client([spans.step(), *steps, *shape_chain(electric_upstream)])
    live = await caught_up(client)
    spans.exporter.clear()
    return spans, client, live


async def test_a_long_poll_span_covers_the_hold_and_ends_after_the_answer(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    spans, client, live = await traced_client(proxy_client, electric_upstream)
    electric = electric_upstream.electric
    request = asyncio.ensure_future(client.get("/v1/shape", params=live, headers=auth(ALICE)))
    await electric.wait_until(lambda: electric.held == 1)
    await asyncio.sleep(0.3)
    assert spans.finished() == []
    electric.insert("todos", {"id": 10, "org_id": "acme", "title": "new", "done": False})
    resp = await request
    assert resp.status == 200
    assert [m["value"]["title"] for m in await resp.json() if "value" in m] == ["new"]

    server = await spans.one(SpanKind.SERVER)
    upstream_call = await spans.one(SpanKind.CLIENT)
    assert server.start_time is not None and server.end_time is not None
    assert upstream_call.end_time is not None
    assert server.end_time - server.start_time >= 300_000_000
    assert server.end_time >= upstream_call.end_time
    assert server.attributes is not None
    assert server.attributes["electric_proxy.shape.live"] is True
    assert server.attributes["electric_proxy.shape.live_sse"] is False
    assert server.attributes["electric_proxy.shape.handle"] == live["handle"]
    assert server.attributes["electric_proxy.shape.offset"] == live["offset"]
    assert server.status.status_code == StatusCode.UNSET


async def test_an_sse_span_ends_when_the_streamed_body_does(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    """Electric answers SSE headers at once and streams for ``sse_timeout`` (2 s here): the
    chain has long returned and the CLIENT span has ended while the body still flows."""
    spans, client, live = await traced_client(proxy_client, electric_upstream)
    resp = await client.get("/v1/shape", params={**live, "live_sse": "true"}, headers=auth(ALICE))
    assert resp.status == 200
    upstream_call = await spans.one(SpanKind.CLIENT)
    electric_upstream.electric.insert(
        "todos", {"id": 11, "org_id": "acme", "title": "streamed", "done": False}
    )
    assert b"streamed" in await resp.content.readuntil(b"\n\n")
    assert spans.finished(SpanKind.SERVER) == []
    await resp.read()

    server = await spans.one(SpanKind.SERVER)
    assert server.end_time is not None and upstream_call.end_time is not None
    assert server.end_time - upstream_call.end_time >= 1_500_000_000
    assert server.attributes is not None
    assert server.attributes["electric_proxy.shape.live_sse"] is True
    assert server.attributes["http.response.status_code"] == 200
    assert server.status.status_code == StatusCode.UNSET


async def test_a_client_leaving_a_long_poll_still_ends_both_spans(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    spans, client, live = await traced_client(proxy_client, electric_upstream)
    electric = electric_upstream.electric
    request = asyncio.ensure_future(client.get("/v1/shape", params=live, headers=auth(ALICE)))
    await electric.wait_until(lambda: electric.held == 1)
    request.cancel()

    server = await spans.one(SpanKind.SERVER)
    upstream_call = await spans.one(SpanKind.CLIENT)
    assert server.attributes is not None and upstream_call.attributes is not None
    assert server.status.status_code == StatusCode.ERROR
    assert server.status.description is not None and "cancelled" in server.status.description
    assert server.attributes["error.type"] == CANCELLED
    assert "http.response.status_code" not in server.attributes
    # The shared upstream request is cancelled once its last waiter has gone.
    assert upstream_call.status.status_code == StatusCode.ERROR
    assert upstream_call.attributes["error.type"] == CANCELLED
    await electric.wait_until(lambda: electric.held == 0)


async def test_a_client_leaving_mid_body_ends_the_span_as_an_error(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    spans, client, live = await traced_client(proxy_client, electric_upstream)
    resp = await client.get("/v1/shape", params={**live, "live_sse": "true"}, headers=auth(ALICE))
    assert resp.status == 200
    electric_upstream.electric.insert(
        "todos", {"id": 12, "org_id": "acme", "title": "half", "done": False}
    )
    await resp.content.readuntil(b"\n\n")
    resp.close()

    server = await spans.one(SpanKind.SERVER)
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert server.status.status_code == StatusCode.ERROR
    assert server.attributes["error.type"] in {CANCELLED, "ConnectionResetError"}


@pytest.mark.parametrize("coalesce_live", [True, False])
async def test_an_upstream_cut_mid_body_is_an_error(
    aiohttp_server: Any, aiohttp_client: Any, coalesce_live: bool
) -> None:
    async def dies(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "100000"})
        await resp.prepare(request)
        await resp.write(b"[" + b" " * 1000)
        assert request.transport is not None
        request.transport.close()
        return resp

    app = web.Application()
    app.router.add_get("/v1/shape", dies)
    upstream = await aiohttp_server(app)
    spans = Recorder()
    url = str(upstream.make_url("/v1/shape"))
    proxy = ShapeProxy(upstream=url, chain=[spans.step()], coalesce_live=coalesce_live)
    client = await aiohttp_client(proxy.app())
    resp = await client.get("/v1/shape", params={"offset": "0_0", "handle": "h", "live": "true"})
    assert resp.status == 200
    with pytest.raises(Exception):  # noqa: B017 - the proxy cuts the connection
        await resp.read()

    server = await spans.one(SpanKind.SERVER)
    upstream_call = await spans.one(SpanKind.CLIENT)
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert str(server.attributes["error.type"]).startswith("aiohttp.client_exceptions.")
    assert server.status.status_code == StatusCode.ERROR
    # The headers were fine when they came: the CLIENT span had ended by then.
    assert upstream_call.status.status_code == StatusCode.UNSET


async def test_coalesced_long_polls_share_one_upstream_span(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    """Two clients with their own (untrusted) traceparents still share one upstream request:
    the proxy replaces trace headers rather than adding them to what Electric sees."""
    live_requests = 0

    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal live_requests
        live_requests += "live" in request.query
        return await handler(request)

    spans, client, live = await traced_client(proxy_client, electric_upstream, count)
    electric = electric_upstream.electric
    requests = [
        asyncio.ensure_future(
            client.get("/v1/shape", params=live, headers={**auth(ALICE), "traceparent": parent})
        )
        for parent in (
            "00-11111111111111111111111111111111-1111111111111111-01",
            "00-22222222222222222222222222222222-2222222222222222-01",
        )
    ]
    await electric.wait_until(lambda: live_requests == 2 and electric.held >= 1)
    await asyncio.sleep(0.1)
    assert electric.held == 1
    electric.insert("todos", {"id": 13, "org_id": "acme", "title": "shared", "done": False})
    assert [(await r).status for r in requests] == [200, 200]

    servers = await spans.wait(SpanKind.SERVER, 2)
    [upstream_call] = await spans.wait(SpanKind.CLIENT)
    # It belongs to the trace of the client whose request went upstream.
    assert upstream_call.parent is not None
    assert upstream_call.parent.span_id in {s.context.span_id for s in servers if s.context}
