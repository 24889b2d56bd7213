"""Live-request coalescing: one upstream request for many identical waiting long-polls."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import standard_chain

from electric_proxy import RequestId, ShapeProxy
from electric_proxy.standin import two_tenant_upstream
from electric_proxy.testing import ALICE, BOB, UPSTREAM_SECRET, RunningUpstream, auth, live_params

LIVE = {"offset": "0_0", "handle": "h-1", "live": "true", "cursor": "7"}


class HeldUpstream:
    """Holds every live request until `release()`, counting what reached it."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.cancelled = 0
        self.answer = asyncio.Event()
        self.fail = False
        #: Set: the body is sent in two parts, the second once ``rest`` is set.
        self.rest: asyncio.Event | None = None
        self.app = web.Application()
        self.app.router.add_get("/v1/shape", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append(request.query_string)
        try:
            await self.answer.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail:
            assert request.transport is not None
            request.transport.close()
        body = b'[{"headers":{"control":"up-to-date","global_last_seen_lsn":"9"}}]'
        if self.rest is not None:
            streamed = web.StreamResponse(headers={"Content-Type": "application/json"})
            await streamed.prepare(request)
            await streamed.write(body[:10])
            await self.rest.wait()
            await streamed.write(body[10:])
            await streamed.write_eof()
            return streamed
        return web.Response(
            body=body,
            content_type="application/json",
            headers={
                "electric-cursor": "8",
                "electric-offset": "0_0",
                "electric-handle": "h-1",
                "electric-up-to-date": "",
                "Cache-Control": "public, max-age=5",
            },
        )


@pytest.fixture
async def held(aiohttp_server: Any) -> tuple[HeldUpstream, str]:
    upstream = HeldUpstream()
    server = await aiohttp_server(upstream.app)
    return upstream, str(server.make_url("/v1/shape"))


async def _until(condition: Any, seconds: float = 10) -> None:
    """Wait for counters kept by the proxy and the upstream, which offer no event to await."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_thousand_waiting_clients_cost_one_upstream_request(
    held: tuple[HeldUpstream, str], aiohttp_client: Any
) -> None:
    upstream, url = held
    proxy = ShapeProxy(upstream=url)
    client = await aiohttp_client(proxy.app())
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        target = client.make_url("/v1/shape")
        waiting = [asyncio.ensure_future(session.get(target, params=LIVE)) for _ in range(1000)]
        # A thousand connections on a loaded 2-core machine can take a while to arrive.
        await _until(lambda: proxy.forwarder.coalescer.joined == 999, seconds=60)
        upstream.answer.set()
        responses = await asyncio.gather(*waiting)
        bodies = [await r.read() for r in responses]
    assert len(upstream.received) == 1
    assert {r.status for r in responses} == {200}
    assert {r.headers["electric-cursor"] for r in responses} == {"8"}
    assert all(r.headers["electric-up-to-date"] == "" for r in responses)
    assert len(set(bodies)) == 1 and b"up-to-date" in bodies[0]


async def test_clients_that_leave_do_not_cancel_it_for_the_others(
    held: tuple[HeldUpstream, str], aiohttp_client: Any
) -> None:
    upstream, url = held
    proxy = ShapeProxy(upstream=url)
    client = await aiohttp_client(proxy.app())
    stay = asyncio.ensure_future(client.get("/v1/shape", params=LIVE))
    leaving = [asyncio.ensure_future(client.get("/v1/shape", params=LIVE)) for _ in range(5)]
    await _until(lambda: proxy.forwarder.coalescer.joined == 5)
    for task in leaving:
        task.cancel()
    await asyncio.sleep(0.1)
    upstream.answer.set()
    resp = await stay
    assert resp.status == 200 and b"up-to-date" in await resp.read()
    assert upstream.cancelled == 0 and len(upstream.received) == 1


async def test_when_the_first_client_leaves_the_others_ask_again_and_are_all_answered(
    held: tuple[HeldUpstream, str], aiohttp_client: Any
) -> None:
    upstream, url = held
    proxy = ShapeProxy(upstream=url)
    coalescer = proxy.forwarder.coalescer
    assert coalescer is not None
    client = await aiohttp_client(proxy.app())
    first = asyncio.ensure_future(client.get("/v1/shape", params=LIVE))
    await _until(lambda: len(upstream.received) == 1)
    staying = [asyncio.ensure_future(client.get("/v1/shape", params=LIVE)) for _ in range(5)]
    await _until(lambda: coalescer.joined == 5)
    first.cancel()  # the client whose request went upstream
    # Its upstream request goes with it; one of the others asks again for all of them.
    await _until(lambda: upstream.cancelled == 1 and len(upstream.received) == 2)
    upstream.answer.set()
    responses = await asyncio.gather(*staying)
    assert [r.status for r in responses] == [200] * 5
    assert all([b"up-to-date" in await r.read() for r in responses])
    assert coalescer.upstream_requests == 2 and len(upstream.received) == 2


async def test_a_body_still_arriving_reaches_every_waiter_whoever_leaves(
    held: tuple[HeldUpstream, str], aiohttp_client: Any
) -> None:
    upstream, url = held
    upstream.rest = asyncio.Event()
    proxy = ShapeProxy(upstream=url)
    coalescer = proxy.forwarder.coalescer
    assert coalescer is not None
    client = await aiohttp_client(proxy.app())
    first = _started(client)
    await _until(lambda: len(upstream.received) == 1)
    others = [_started(client) for _ in range(3)]
    await _until(lambda: coalescer.joined == 3)
    upstream.answer.set()
    heads = await asyncio.gather(first, *others)
    assert {r.status for r in heads} == {200}
    heads[0].close()  # the client whose request went upstream leaves mid-body
    upstream.rest.set()
    bodies = [await r.read() for r in heads[1:]]
    assert bodies == [b'[{"headers":{"control":"up-to-date","global_last_seen_lsn":"9"}}]'] * 3
    assert len(upstream.received) == 1 and upstream.cancelled == 0


def _started(client: Any) -> asyncio.Future[Any]:
    return asyncio.ensure_future(client.get("/v1/shape", params=LIVE))


async def test_when_everyone_leaves_the_upstream_request_is_cancelled(
    held: tuple[HeldUpstream, str], aiohttp_client: Any
) -> None:
    upstream, url = held
    proxy = ShapeProxy(upstream=url)
    client = await aiohttp_client(proxy.app())
    leaving = [asyncio.ensure_future(client.get("/v1/shape", params=LIVE)) for _ in range(3)]
    await _until(lambda: len(upstream.received) == 1 and proxy.forwarder.coalescer.joined == 2)
    for task in leaving:
        task.cancel()
    await _until(lambda: upstream.cancelled == 1)


async def test_a_failure_reaches_every_waiter(
    held: tuple[HeldUpstream, str], aiohttp_client: Any
) -> None:
    upstream, url = held
    proxy = ShapeProxy(upstream=url)
    client = await aiohttp_client(proxy.app())
    waiting = [asyncio.ensure_future(client.get("/v1/shape", params=LIVE)) for _ in range(20)]
    await _until(lambda: proxy.forwarder.coalescer.joined == 19)
    upstream.fail = True
    upstream.answer.set()
    responses = await asyncio.gather(*waiting)
    assert {r.status for r in responses} == {502}
    # One shared request (aiohttp's client itself retries a GET once on a dropped connection).
    assert proxy.forwarder.coalescer.upstream_requests == 1


async def test_never_shared_across_principals_or_when_off(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    client = await proxy_client(standard_chain(electric_upstream))
    first = await client.get("/v1/shape?offset=-1", headers=auth(ALICE))
    await client.get("/v1/shape?offset=-1", headers=auth(BOB))
    live = live_params(first.headers, cursor="1")
    before = len(electric_upstream.electric.requests)
    alice, bob = await asyncio.gather(
        client.get("/v1/shape", params=live, headers=auth(ALICE)),
        client.get("/v1/shape", params=live, headers=auth(BOB)),
    )
    assert len(electric_upstream.electric.requests) - before == 2
    assert alice.status == 200 and bob.status in (200, 409)


async def test_off_means_one_upstream_request_each(
    held: tuple[HeldUpstream, str], aiohttp_client: Any
) -> None:
    upstream, url = held
    client = await aiohttp_client(ShapeProxy(upstream=url, coalesce_live=False).app())
    waiting = [asyncio.ensure_future(client.get("/v1/shape", params=LIVE)) for _ in range(5)]
    await _until(lambda: len(upstream.received) == 5)
    upstream.answer.set()
    assert {r.status for r in await asyncio.gather(*waiting)} == {200}


async def test_request_ids_and_trace_context_do_not_split_a_shared_wait(
    aiohttp_server: Any, aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's chain mints a fresh X-Request-ID per request, and browsers send their own
    traceparent: 200 identical waits must still be one upstream request."""
    electric = two_tenant_upstream(UPSTREAM_SECRET, long_poll_timeout=60.0)
    server = await aiohttp_server(electric.app(), access_log=None)
    running = RunningUpstream(electric=electric, server=server, secret=UPSTREAM_SECRET)
    proxy = ShapeProxy(upstream=running.url, chain=[RequestId(), *standard_chain(running)])
    client = await aiohttp_client(proxy.app())
    first = await client.get("/v1/shape", params={"offset": "-1"}, headers=auth(ALICE))
    live = live_params(first.headers, cursor="1")
    caplog.set_level(logging.DEBUG, logger="electric_proxy.coalesce")
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        target = client.make_url("/v1/shape")

        def wait(n: int) -> Any:
            trace = f"00-{n:032x}-{n:016x}-01"
            headers = {**auth(ALICE), "traceparent": trace, "tracestate": f"k={n}"}
            return asyncio.ensure_future(session.get(target, params=live, headers=headers))

        waiting = [wait(n) for n in range(1, 201)]
        await _until(lambda: proxy.forwarder.coalescer.joined == 199, seconds=60)
        electric.insert("todos", {"id": 5, "org_id": "acme", "title": "New"})
        responses = await asyncio.gather(*waiting)
        bodies = {await r.read() for r in responses}
    upstream_live = [r for r in electric.requests if r.query.get("live") == "true"]
    assert len(upstream_live) == 1
    assert proxy.forwarder.coalescer.upstream_requests == 1
    assert {r.status for r in responses} == {200} and len(bodies) == 1
    # Each client still has its own request ID; the shared request carried the first one's.
    ids = {r.headers["X-Request-ID"] for r in responses}
    assert len(ids) == 200
    sent_id = upstream_live[0].headers["X-Request-ID"]
    assert sent_id in ids
    joined = [r for r in caplog.records if r.name == "electric_proxy.coalesce"]
    assert len(joined) == 199
    assert all(r.getMessage() == f"joined the shared upstream request {sent_id}" for r in joined)
    assert not any(ALICE in r.getMessage() for r in caplog.records)
