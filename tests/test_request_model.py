"""What is checked is what is sent: the upstream receives exactly the object the steps saw.

Each endpoint parses the client's target once into an ``UpstreamRequest`` before any step
runs; the forwarder serialises that object and nothing else. These tests generate paths and
queries (seeded, so a failure repeats), send them as raw bytes on a real socket, and compare
what a step at the end of the chain saw with what the upstream decoded on arrival.
"""

from __future__ import annotations

import asyncio
import random
import string
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import pytest
from aiohttp import web

from electric_proxy import (
    UPSTREAM,
    BearerAuth,
    ShapeProxy,
    StaticToken,
    StreamPolicy,
    StreamProxy,
    StreamRule,
)
from electric_proxy.chain import Handler
from electric_proxy.testing import ALICE

CASES = 400
#: Characters a request target may carry unencoded in a path segment (RFC 3986 pchar).
_RAW_OK = set(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@")
_ALPHABET = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@ %/?#\\\x00\x7fé€😀"


class Recorder:
    """The upstream: answers 200 and keeps the raw target of every request it received."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(request.raw_path)
        return web.Response(text="[]", content_type="application/json")


class Saw:
    """A last step that records the upstream request as the chain left it."""

    def __init__(self) -> None:
        self.seen: list[tuple[tuple[str, ...], list[tuple[str, str]]]] = []

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        built = request[UPSTREAM]
        self.seen.append((built.path, list(built.query.items())))
        return await handler(request)


def _encode(text: str, rng: random.Random) -> str:
    """``text`` as a client might write it: unreserved characters sometimes encoded."""
    out = []
    for char in text:
        if char in _RAW_OK and rng.random() < 0.7:
            out.append(char)
        else:
            out.append(quote(char, safe=""))
    return "".join(out)


def _word(rng: random.Random, size: int = 6) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, size)))


async def _send(host: str, port: int, target: str, method: str = "GET") -> int:
    """Raw bytes, so that no client library normalises the target on the way."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"{method} {target} HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer {ALICE}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
    )
    status_line = await reader.readline()
    await reader.read()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


def _decoded(raw_target: str, base: str) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    path, _, query = raw_target.partition("?")
    assert path.startswith(base), raw_target
    segments = tuple(unquote(s) for s in path[len(base) :].split("/")) if path != base else ()
    return segments, parse_qsl(query, keep_blank_values=True)


@pytest.fixture
async def recorder(aiohttp_server: Any) -> tuple[Recorder, Any]:
    upstream = Recorder()
    return upstream, await aiohttp_server(upstream.app)


def _token() -> BearerAuth:
    return BearerAuth(tokens=[StaticToken(token=ALICE, sub="alice", claims={"org_id": "acme"})])


async def test_stream_paths_and_queries_arrive_as_the_steps_saw_them(
    aiohttp_client: Any, recorder: tuple[Recorder, Any]
) -> None:
    upstream, server = recorder
    saw = Saw()
    proxy = StreamProxy(
        upstream=str(server.make_url("/v1/stream/svc-1")),
        chain=[_token(), StreamPolicy(rules=[StreamRule(paths=["**"], allow=["read"])]), saw],
    )
    client = await aiohttp_client(proxy.app())
    rng = random.Random(20261202)
    statuses: dict[int, int] = {}
    for _ in range(CASES):
        segments = [_word(rng) for _ in range(rng.randint(1, 4))]
        pairs = [(_word(rng, 4), _word(rng)) for _ in range(rng.randint(0, 3))]
        target = "/v1/stream/" + "/".join(_encode(s, rng) for s in segments)
        if pairs:
            target += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
        before = len(upstream.received)
        status = await _send(client.server.host, client.server.port, target)
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            assert len(upstream.received) == before + 1
            assert _decoded(upstream.received[-1], "/v1/stream/svc-1/") == saw.seen[-1], target
        else:
            assert status == 400, (status, target)
            assert len(upstream.received) == before, target
    print(f"\n[stream targets] {CASES} generated: {dict(sorted(statuses.items()))}")
    # Both outcomes were exercised, so neither branch above is vacuous.
    assert statuses.get(200, 0) > CASES // 10 and statuses.get(400, 0) > CASES // 10, statuses


async def test_shape_queries_arrive_as_the_steps_saw_them(
    aiohttp_client: Any, recorder: tuple[Recorder, Any]
) -> None:
    upstream, server = recorder
    saw = Saw()
    proxy = ShapeProxy(upstream=str(server.make_url("/v1/shape")), chain=[_token(), saw])
    client = await aiohttp_client(proxy.app())
    rng = random.Random(7)
    keys = ["offset", "handle", "live", "cursor", "log", "cache-buster", "where", "table", "x"]
    for _ in range(CASES // 2):
        pairs = [(rng.choice(keys), _word(rng)) for _ in range(rng.randint(0, 5))]
        unique = list(dict(pairs).items())  # a repeated protocol key is a 400 of its own
        target = "/v1/shape?" + "&".join(
            f"{quote(k, safe='')}={_encode(v, rng)}" for k, v in unique
        )
        assert await _send(client.server.host, client.server.port, target) == 200, target
        assert _decoded(upstream.received[-1], "/v1/shape") == saw.seen[-1], target
        assert all(
            k in ("offset", "handle", "live", "cursor", "log", "cache-buster")
            for k, _ in saw.seen[-1][1]
        )


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_a_fragment_cannot_smuggle_a_path_past_the_stream_policy(
    aiohttp_client: Any, recorder: tuple[Recorder, Any], method: str
) -> None:
    """Measured before: with `rooms/*/members/{sub}`, `rooms/r1` was a 403 while
    `rooms/r1#/members/alice` was a 200 that reached `rooms/r1` upstream."""
    upstream, server = recorder
    rule = StreamRule(paths=["rooms/*/members/{sub}"], allow=["read", "append", "delete"])
    proxy = StreamProxy(
        upstream=str(server.make_url("/v1/stream")), chain=[_token(), StreamPolicy(rules=[rule])]
    )
    client = await aiohttp_client(proxy.app())

    def send(target: str) -> Any:
        return _send(client.server.host, client.server.port, target, method)

    assert await send("/v1/stream/rooms/r1") == 403
    for target in (
        "/v1/stream/rooms/r1#/members/alice",
        "/v1/stream/rooms/r1%23/members/alice",
        "/v1/stream/rooms/r1%2Fmembers%2Falice",
        "/v1/stream/rooms/r1?/members/alice#x",
    ):
        assert await send(target) == 400, target
    assert upstream.received == []
    assert await send("/v1/stream/rooms/r1/members/alice") in (200, 204)
    assert upstream.received == ["/v1/stream/rooms/r1/members/alice"]
