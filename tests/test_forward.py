"""The engine's forwarding rules, against small purpose-built upstreams on real sockets."""

from __future__ import annotations

import asyncio
import gzip
import json
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from electric_proxy import ShapeProxy, UpstreamResponse, UpstreamSettings
from electric_proxy.testing import eventually, free_port

Upstream = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
def proxy_for(aiohttp_server: Any, aiohttp_client: Any) -> Callable[..., Awaitable[Any]]:
    """A proxy with an empty chain in front of one upstream handler."""

    async def make(handler: Upstream, **settings: Any) -> Any:
        upstream_app = web.Application()
        upstream_app.router.add_route("*", "/v1/shape", handler)
        upstream = await aiohttp_server(upstream_app)
        url = str(upstream.make_url("/v1/shape"))
        proxy = ShapeProxy(upstream=UpstreamSettings(url=url, **settings))
        client = await aiohttp_client(proxy.app())
        client.upstream_server = upstream
        return client

    return make


async def test_streams_big_bodies_without_buffering_them(proxy_for: Any) -> None:
    chunk = b"x" * 65536

    def body_of(megabytes: int) -> Upstream:
        async def handler(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            for _ in range(megabytes * 16):
                await resp.write(chunk)
            return resp

        return handler

    async def peak_while_streaming(megabytes: int) -> int:
        client = await proxy_for(body_of(megabytes))
        tracemalloc.start()
        try:
            resp = await client.get("/v1/shape", params={"offset": "-1"})
            received = 0
            async for data in resp.content.iter_chunked(65536):
                received += len(data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert received == megabytes * 1024 * 1024
        return peak

    small = await peak_while_streaming(2)
    large = await peak_while_streaming(32)
    # Both the proxy and the test client live in this process; a buffered 32 MB body would
    # show up as >32 MB of peak allocation.
    assert large < 8 * 1024 * 1024, large
    assert large < small * 3, (small, large)


async def test_sse_is_flushed_chunk_by_chunk(proxy_for: Any) -> None:
    first_seen = asyncio.Event()

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"n":1}\n\n')
        # The second event is only written once the client has seen the first: a proxy
        # that buffered would deadlock here and the test would time out.
        await asyncio.wait_for(first_seen.wait(), 5)
        await resp.write(b'data: {"n":2}\n\n')
        return resp

    client = await proxy_for(sse)
    resp = await client.get("/v1/shape", params={"offset": "0_0", "live": "true"})
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert "Content-Encoding" not in resp.headers
    first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
    assert first == b'data: {"n":1}\n\n'
    first_seen.set()
    second = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
    assert second == b'data: {"n":2}\n\n'


async def test_gzip_passes_through_untouched(proxy_for: Any) -> None:
    payload = json.dumps([{"value": {"n": str(i)}} for i in range(2000)]).encode()
    compressed = gzip.compress(payload)
    seen_encodings: list[str | None] = []

    async def gz(request: web.Request) -> web.StreamResponse:
        seen_encodings.append(request.headers.get("Accept-Encoding"))
        if "gzip" not in request.headers.get("Accept-Encoding", ""):
            return web.Response(body=payload, content_type="application/json")
        return web.Response(
            body=compressed,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    client = await proxy_for(gz)
    raw = await client.get(
        "/v1/shape",
        params={"offset": "-1"},
        headers={"Accept-Encoding": "gzip"},
        auto_decompress=False,
    )
    assert raw.headers["Content-Encoding"] == "gzip"
    body = await raw.read()
    assert body == compressed
    assert int(raw.headers["Content-Length"]) == len(compressed)
    decoded = await client.get("/v1/shape", params={"offset": "-1"})
    assert await decoded.json() == json.loads(payload)
    # aiohttp's own default Accept-Encoding must not be added when the client sent none.
    plain = await client.get(
        "/v1/shape", params={"offset": "-1"}, skip_auto_headers=["Accept-Encoding"]
    )
    assert "Content-Encoding" not in plain.headers
    assert await plain.read() == payload
    assert seen_encodings[-1] is None


async def test_hop_by_hop_headers_dropped_and_the_rest_kept(proxy_for: Any) -> None:
    received: dict[str, str] = {}

    async def upstream(request: web.Request) -> web.StreamResponse:
        received.update(request.headers)
        return web.Response(
            status=200,
            text="[]",
            content_type="application/json",
            headers={
                "Connection": "keep-alive, X-Private-Hop",
                "X-Private-Hop": "1",
                "Keep-Alive": "timeout=5",
                "electric-up-to-date": "",
                "electric-handle": "1-2",
                "electric-offset": "0_0",
                "ETag": '"1-2:-1:0_0"',
                "Cache-Control": "public, max-age=60",
                "Retry-After": "3",
            },
        )

    client = await proxy_for(upstream)
    resp = await client.get(
        "/v1/shape",
        params={"offset": "-1"},
        headers={
            "Authorization": "Bearer user-token",
            "Cookie": "session=abc",
            "Connection": "X-Client-Hop",
            "X-Client-Hop": "1",
            "TE": "trailers",
            "If-None-Match": '"a"',
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
    )
    assert resp.status == 200
    assert resp.headers["electric-up-to-date"] == ""
    assert resp.headers["ETag"] == '"1-2:-1:0_0"'
    assert resp.headers["Cache-Control"] == "public, max-age=60"
    assert resp.headers["Retry-After"] == "3"
    for gone in ("X-Private-Hop", "Keep-Alive"):
        assert gone not in resp.headers
    lowered = {k.lower() for k in received}
    assert {"authorization", "cookie", "x-client-hop", "te"}.isdisjoint(lowered)
    assert received["If-None-Match"] == '"a"'
    assert received["traceparent"].startswith("00-0af7")


@pytest.mark.parametrize("status", [304, 400, 409, 429, 500, 503])
async def test_status_codes_pass_through(proxy_for: Any, status: int) -> None:
    async def upstream(request: web.Request) -> web.StreamResponse:
        body = None if status == 304 else b'[{"headers":{"control":"must-refetch"}}]'
        return web.Response(status=status, body=body, headers={"electric-handle": "7-8"})

    client = await proxy_for(upstream)
    resp = await client.get("/v1/shape", params={"offset": "-1"})
    assert resp.status == status
    assert resp.headers["electric-handle"] == "7-8"


async def test_head_is_forwarded_as_head(proxy_for: Any) -> None:
    methods: list[str] = []

    async def upstream(request: web.Request) -> web.StreamResponse:
        methods.append(request.method)
        return web.Response(text="[]", content_type="application/json")

    client = await proxy_for(upstream)
    resp = await client.head("/v1/shape", params={"offset": "-1"})
    assert resp.status == 200
    assert methods == ["HEAD"]
    assert resp.headers["Content-Length"] == "2"  # the GET's length, not the empty HEAD body's


async def test_a_body_that_arrived_with_its_headers_is_sent_whole(proxy_for: Any) -> None:
    body = b'[{"headers":{"control":"up-to-date"}}]'

    async def upstream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"electric-offset": "0_0"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(body)
        await response.write_eof()
        return response

    client = await proxy_for(upstream)
    resp = await client.get("/v1/shape", params={"offset": "-1"})
    assert await resp.read() == body
    # Framed by length, not chunks: the proxy had the whole body and sent it in one write.
    assert resp.headers["Content-Length"] == str(len(body))
    assert "Transfer-Encoding" not in resp.headers
    assert resp.headers["electric-offset"] == "0_0"


async def test_a_body_still_arriving_is_streamed_with_its_headers_first(proxy_for: Any) -> None:
    release = asyncio.Event()

    async def upstream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"[")
        await release.wait()
        await response.write(b"]")
        await response.write_eof()
        return response

    client = await proxy_for(upstream)
    resp = await client.get("/v1/shape", params={"offset": "-1"})
    assert resp.status == 200  # headers came before the rest of the body existed
    assert resp.headers["Transfer-Encoding"] == "chunked"
    release.set()
    assert await resp.read() == b"[]"


async def test_upstream_down_is_a_clean_502(aiohttp_client: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/shape"
    client = await aiohttp_client(ShapeProxy(upstream=url).app())
    resp = await client.get("/v1/shape", params={"offset": "-1"})
    assert resp.status == 502
    body = await resp.json()
    assert body["error"] == "upstream_unavailable"
    assert "127.0.0.1" not in json.dumps(body)


async def test_upstream_silent_is_a_clean_504(proxy_for: Any) -> None:
    async def silent(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(10)
        raise AssertionError("unreachable")

    client = await proxy_for(silent, read_timeout=0.3)
    resp = await client.get("/v1/shape", params={"offset": "-1"})
    assert resp.status == 504
    assert (await resp.json())["error"] == "upstream_timeout"


async def test_upstream_dying_mid_body_cuts_the_client(proxy_for: Any) -> None:
    async def dies(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "100000"})
        await resp.prepare(request)
        await resp.write(b"[" + b" " * 1000)
        assert request.transport is not None
        request.transport.close()
        return resp

    client = await proxy_for(dies)
    resp = await client.get("/v1/shape", params={"offset": "-1"})
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()


async def test_steps_learn_how_the_body_ended(aiohttp_server: Any, aiohttp_client: Any) -> None:
    endings: list[BaseException | None] = []

    async def watch(request: web.Request, handler: Any) -> web.StreamResponse:
        resp = await handler(request)
        assert isinstance(resp, UpstreamResponse)  # still arriving: streamed, not whole
        resp.add_done_callback(endings.append)
        return resp

    async def upstream(request: web.Request) -> web.StreamResponse:
        if request.query["offset"] == "-1":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            await resp.write(b"[")
            await asyncio.sleep(0.05)
            await resp.write(b'{"headers": {"control": "up-to-date"}}]')
            return resp
        resp = web.StreamResponse(headers={"Content-Length": "100000"})
        await resp.prepare(request)
        await resp.write(b"[" + b" " * 1000)
        assert request.transport is not None
        request.transport.close()
        return resp

    upstream_app = web.Application()
    upstream_app.router.add_get("/v1/shape", upstream)
    server = await aiohttp_server(upstream_app)
    proxy = ShapeProxy(upstream=str(server.make_url("/v1/shape")), chain=[watch])
    client = await aiohttp_client(proxy.app())

    assert await (await client.get("/v1/shape", params={"offset": "-1"})).json()
    assert endings == [None]
    resp = await client.get("/v1/shape", params={"offset": "0_0"})
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    assert len(endings) == 2
    assert isinstance(endings[1], aiohttp.ClientError)


async def test_client_disconnect_cancels_the_upstream_request(proxy_for: Any) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    client = await proxy_for(held)
    tasks_before = len(asyncio.all_tasks())
    request = asyncio.ensure_future(
        client.get("/v1/shape", params={"offset": "0_0", "live": "true", "handle": "h"})
    )
    await asyncio.wait_for(started.wait(), 5)
    request.cancel()
    await asyncio.wait_for(cancelled.wait(), 5)
    # The upstream connection is closed, not parked in the pool, and no task lingers.
    await eventually(lambda: not client.upstream_server.runner.server.connections, within=1.0)
    assert client.upstream_server.runner.server.connections == []
    assert len(asyncio.all_tasks()) <= tasks_before


async def test_client_abort_mid_stream_closes_the_upstream(proxy_for: Any) -> None:
    upstream_gone = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            while True:
                await resp.write(b"data: {}\n\n")
                await asyncio.sleep(0.01)
        except (ConnectionError, asyncio.CancelledError):
            upstream_gone.set()
            raise

    client = await proxy_for(endless)
    resp = await client.get("/v1/shape", params={"offset": "0_0", "live": "true"})
    await resp.content.readuntil(b"\n\n")
    resp.close()
    await asyncio.wait_for(upstream_gone.wait(), 5)


async def test_many_live_requests_are_not_queued_behind_a_small_pool(proxy_for: Any) -> None:
    """aiohttp's default pool of 100 would hold the rest back until the first ones finish."""
    held = 0
    all_in = asyncio.Event()
    total = 300

    async def long_poll(request: web.Request) -> web.StreamResponse:
        nonlocal held
        held += 1
        if held == total:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 10)
        return web.Response(text="[]", content_type="application/json")

    client = await proxy_for(long_poll)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = client.make_url("/v1/shape")
        # Distinct cursors: identical long-polls would be coalesced into one upstream request.
        responses = await asyncio.gather(
            *(
                session.get(url, params={"offset": "0_0", "live": "true", "cursor": str(i)})
                for i in range(total)
            )
        )
        assert [r.status for r in responses] == [200] * total
        for r in responses:
            r.release()


@pytest.mark.parametrize("hold", [0.5])
async def test_long_poll_shorter_than_read_timeout_is_not_cut(proxy_for: Any, hold: float) -> None:
    async def holds(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(hold)
        return web.Response(text="[]", content_type="application/json")

    client = await proxy_for(holds, read_timeout=hold * 4)
    resp = await client.get("/v1/shape", params={"offset": "0_0", "live": "true"})
    assert resp.status == 200


@pytest.mark.timeout(60)
async def test_realistic_long_poll_held_25_seconds(proxy_for: Any) -> None:
    """Electric holds up to 20 s; with the default settings a 25 s hold must survive."""

    async def holds(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(25)
        return web.Response(text="[]", content_type="application/json")

    client = await proxy_for(holds)
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await client.get("/v1/shape", params={"offset": "0_0", "live": "true"})
    assert resp.status == 200
    assert loop.time() - started >= 25


async def test_a_header_connection_names_is_dropped_even_after_passing_before(
    proxy_for: Any,
) -> None:
    """Header names are classified once per spelling; what ``Connection`` names is decided
    per response, so a name passed on in one answer is still dropped from the next."""
    answers = iter(["keep-alive", "keep-alive, X-Sometimes-Hop", "close"])

    async def upstream(request: web.Request) -> web.StreamResponse:
        headers = {"Connection": next(answers), "X-Sometimes-Hop": "1"}
        headers["Access-Control-Allow-Origin"] = "*"
        headers["ACCESS-CONTROL-ALLOW-CREDENTIALS"] = "true"
        return web.Response(text="[]", content_type="application/json", headers=headers)

    client = await proxy_for(upstream)
    seen = []
    for _ in range(3):
        resp = await client.get("/v1/shape", params={"offset": "-1"})
        assert resp.status == 200
        assert not any(k.lower().startswith("access-control-allow-") for k in resp.headers)
        seen.append("X-Sometimes-Hop" in resp.headers)
    assert seen == [True, False, True]


TRICKY_QUERY_TEXT = [
    "",
    "a b",
    "a+b",
    "a&b=c",
    "100%",
    "%41",
    "é",
    "emoji 😀",
    "\u2028",
    "#frag",
    "?x",
    "/p",
    "params[1]",
    "$1",
    "org_id = $1 AND title IN ('a', 'b')",
    '"id","title"',
    "a;b",
    "~!*()'",
    "a\nb",
    "x" * 300,  # longer than what the encoding cache keeps
]


@pytest.mark.parametrize(
    "base",
    [
        "http://electric:3000/v1/shape",
        "http://electric",
        "https://electric/base%20path/v1/shape",
        "http://[::1]:80/v1/shape",
        "http://ÿ.example/v1/shape",
    ],
)
def test_the_upstream_url_is_the_one_yarl_builds(base: str) -> None:
    """The forwarder appends its own encoding of the query to the base URL; that must be
    exactly yarl's ``with_query``, byte for byte, whatever the keys and values hold."""
    from multidict import MultiDict

    from electric_proxy.chain import UpstreamRequest
    from electric_proxy.forward import Forwarder

    forwarder = Forwarder(UpstreamSettings(url=base))
    query: MultiDict[str] = MultiDict()
    for text in TRICKY_QUERY_TEXT:
        query.add(text, text)
        query.add("where", text)
    for _ in range(2):  # the second time from the encoding cache
        built = forwarder.upstream_url(UpstreamRequest(method="GET", query=query))
        expected = forwarder.url.with_query(query)
        assert built == expected
        assert str(built) == str(expected)
        assert built.raw_query_string == expected.raw_query_string
    assert forwarder.upstream_url(UpstreamRequest(method="GET")) == forwarder.url


def test_the_public_query_quoter_agrees_with_yarls_own() -> None:
    """The fallback for a yarl without ``_quoters`` encodes exactly as the fast path does."""
    from electric_proxy.forward import _quote_query_part, _quote_query_part_public

    for text in TRICKY_QUERY_TEXT:
        assert _quote_query_part_public(text) == _quote_query_part(text)
