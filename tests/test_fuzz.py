"""No client input gives a 500: a seeded fuzz of the HTTP surface, sent as raw bytes.

Shape route (the full chain: CORS, request ID, bearer, a policy with client filters and
subsets, credentials) and streams route (bearer, stream policy, credentials), each on a
real socket in front of an upstream. Every request varies the method, the path, the query
(protocol keys with hostile values), the headers (bytes no client library sends) and the
body. What must hold: an answer the proxy makes itself (the upstream saw nothing) is a
JSON 4xx ``{"error": ...}``, or a 204 to a preflight; no answer is a 5xx other than the
502/504 of an upstream fault. The counts and statuses are printed (``pytest -s``).
"""

from __future__ import annotations

import collections
import json
import random
from typing import Any
from urllib.parse import quote

from aiohttp import web
from conftest import send_raw, standard_chain

from electric_proxy import (
    Cors,
    Credentials,
    RequestId,
    StreamPolicy,
    StreamProxy,
    StreamRule,
)
from electric_proxy.testing import ALICE, BOB, ProxyTestServer, RunningUpstream, two_users

SEED = 20250601
SHAPE_REQUESTS = 1500
STREAM_REQUESTS = 500
ORIGIN = "https://app.example"

KEYS = [
    "offset", "handle", "live", "live_sse", "experimental_live_sse", "cursor", "table",
    "columns", "replica", "where", "params[1]", "params[2]", "params[0]", "params[x]",
    "subset__where", "subset__params", "subset__limit", "subset__offset", "subset__order_by",
    "subset__where_expr", "secret", "api_secret", "log", "", "params", "offset[]",
]  # fmt: skip
VALUES = [
    "-1", "0_0", "now", "true", "false", "todos", "id,title", "full", "1", "-5",
    "99999999999999999999999999", "NaN", "", " ", "title = $1", "title ILIKE '%a%'",
    "true) OR (true", "org_id = 'globex'", "done; DROP TABLE todos", "$1", "$999999",
    '{"1":"x"}', '["a","b"]', "[" * 40 + "]" * 40, "{" * 600, '{"1": NaN}', "id DESC",
    "title COLLATE \"C\"", "\x00", "\u202e", "\ud800", "é" * 50, "%ff%fe", "\\", "'",
    "(((((((((((((((((((((((((((((((((((((((((((((((((x)))))))))))))))))))))))))))))))))))))",
    "a" * 3000, "1e309", "-0", "0x10", "now()", "title = $1 AND done = $2",
]  # fmt: skip
AUTHS = [
    f"Bearer {ALICE}".encode(), f"Bearer {BOB}".encode(), b"Bearer ", b"Bearer \xff\xfe",
    b"Basic YWxpY2U6c2VjcmV0", f"bearer  {ALICE}".encode(), b"Bearer a b c", b"",
    b"Bearer " + b"A" * 4000, "Bearer tökén".encode(), b"Bearer eyJ.eyJ.sig",
]  # fmt: skip
BODIES = [
    b'{"where": "title = $1", "params": {"1": "Plan"}}', b'{"where": 1}', b"[]", b"null",
    b'{"limit": -1}', b'{"offset": 1.5}', b'{"params": ["x", 1]}', b'{"zzz": 1}',
    b"[" * 5000, b'{"where": "' + b"(" * 3000 + b'"}', b"\xff\xfe\x00", b"", b"{",
    b'{"limit": NaN}', b'{"order_by": "title DESC", "limit": 2}', b'{"params": {"1": {"a": 1}}}',
]  # fmt: skip
EXTRA_HEADERS = [
    b"X-Request-ID: " + b"r" * 300, b"X-Request-ID: \xff\xfe", b"X-Forwarded-For: 1.2.3.4, ::1",
    b"X-Forwarded-For: not-an-ip", b"Content-Type: application/json", b"Content-Type: \xff",
    b"Access-Control-Request-Method: GET", b"Access-Control-Request-Headers: x-\xff",
    b"If-None-Match: \"\xff\"", b"Cookie: sid=\xff", b"Accept: text/event-stream",
    b"Stream-Seq: \xff", b"Producer-Epoch: -1", b"Content-Length: 5", b"Expect: 100-continue",
    b"Transfer-Encoding: chunked", b"Accept-Encoding: \xff",
]  # fmt: skip
METHODS = ["GET"] * 6 + ["HEAD", "POST", "POST", "POST", "OPTIONS", "PUT", "DELETE", "PATCH"]


def _encode(rng: random.Random, text: str) -> str:
    if rng.random() < 0.1:  # sometimes raw: the parser and the URL decoder see it as sent
        return "".join(c if 0x21 <= ord(c) < 0x7F and c not in "#&" else _quote(c) for c in text)
    return _quote(text)


def _quote(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def _query(rng: random.Random) -> str:
    # Mostly well-formed around one hostile part, so that most requests get past the gate
    # and the authentication to the parsers behind them.
    pairs = []
    if rng.random() < 0.8:
        pairs.append("offset=-1")
    if rng.random() < 0.3:
        pairs.append("table=todos")
    for _ in range(rng.randint(0, 4)):
        pairs.append(f"{_encode(rng, rng.choice(KEYS))}={_encode(rng, rng.choice(VALUES))}")
    if rng.random() < 0.05:
        pairs.append("%zz=%")
    return "&".join(pairs)


def _request(rng: random.Random, path: str) -> bytes:
    method = rng.choice(METHODS)
    query = _query(rng)
    lines = [f"{method} {path}{'?' + query if query else ''} HTTP/1.1".encode(), b"Host: proxy"]
    auth = rng.choice(AUTHS) if rng.random() < 0.3 else f"Bearer {ALICE}".encode()
    if auth:
        lines.append(b"Authorization: " + auth)
    if rng.random() < 0.5:
        lines.append(f"Origin: {rng.choice([ORIGIN, 'https://evil.example', 'null'])}".encode())
    lines += rng.sample(EXTRA_HEADERS, rng.randint(0, 3))
    body = rng.choice(BODIES) if method in ("POST", "PUT") else b""
    lines = [
        line for line in lines if not line.lower().startswith((b"content-length", b"transfer"))
    ]
    lines += [f"Content-Length: {len(body)}".encode(), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _shape_path(rng: random.Random) -> str:
    return rng.choice(
        ["/v1/shape"] * 45 + ["/v1/shape/", "/v1/%73hape", "/nope", "//v1/shape", "/v1/shape/x"]
    )


def _stream_path(rng: random.Random) -> str:
    user = rng.choice(["alice", "bob", "%61lice", "..", "", "alice%2F..%2Fbob"])
    tail = rng.choice(["room", "room%201", "a/b/c", "%ff", "..", ".", "", "x" * 200, "%2F"])
    return rng.choice([f"/v1/stream/chats/{user}/{tail}", "/v1/stream/", "/v1/stream/orgs/acme/x"])


def _check(
    outcomes: collections.Counter[str],
    answer: tuple[int, dict[str, str], bytes],
    upstream_saw: bool,
) -> None:
    status, headers, body = answer
    assert status < 500 or status in (502, 504), (status, body[:200])
    if upstream_saw:
        outcomes[f"{status} from upstream"] += 1
        return
    if status == 204:  # a preflight, answered locally
        outcomes["204 preflight"] += 1
        return
    assert 400 <= status < 500, (status, body[:200])
    assert headers["content-type"].startswith("application/json"), headers
    code = "(HEAD)"
    if body:  # a HEAD answer has the headers alone
        code = json.loads(body)["error"]
    outcomes[f"{status} {code}"] += 1


async def test_no_client_input_gives_a_500_on_the_shape_route(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    chain = [
        Cors(allow_origins=[ORIGIN], allow_credentials=True),
        RequestId(),
        *standard_chain(
            electric_upstream, client_where=True, filter_columns=["title", "done"], subsets=True
        ),
    ]
    client = await proxy_client(chain)
    rng = random.Random(SEED)
    seen = electric_upstream.electric.requests
    outcomes: collections.Counter[str] = collections.Counter()
    for _ in range(SHAPE_REQUESTS):
        before = len(seen)
        answer = await send_raw(client.port, _request(rng, _shape_path(rng)))
        # An answer with an Age came from the shape cache: Electric's, stored.
        _check(outcomes, answer, len(seen) > before or "age" in answer[1])
    print(f"\nshape route: {SHAPE_REQUESTS} requests, statuses {sorted(outcomes.items())}")
    assert sum(outcomes.values()) == SHAPE_REQUESTS


async def test_no_client_input_gives_a_500_on_the_streams_route(
    aiohttp_client: Any, aiohttp_server: Any
) -> None:
    calls: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        calls.append(request.method)
        await request.read()
        return web.Response(status=200, text="[]", content_type="application/json")

    upstream = web.Application()
    upstream.router.add_route("*", "/{tail:.*}", anything)
    server = await aiohttp_server(upstream, access_log=None)
    proxy = StreamProxy(
        upstream=str(server.make_url("/v1/stream/svc")),
        chain=[
            Cors(allow_origins=[ORIGIN]),
            two_users(),
            StreamPolicy(
                rules=[
                    StreamRule(paths=["chats/{sub}/**"], allow=["read", "append", "create"]),
                    StreamRule(paths=["orgs/{org_id}/*"], allow=["read"]),
                ]
            ),
            Credentials(bearer="service-secret-0123456789"),
        ],
    )
    client = await aiohttp_client(ProxyTestServer(proxy.app()))
    rng = random.Random(SEED + 1)
    outcomes: collections.Counter[str] = collections.Counter()
    for _ in range(STREAM_REQUESTS):
        before = len(calls)
        answer = await send_raw(client.port, _request(rng, _stream_path(rng)))
        _check(outcomes, answer, len(calls) > before)
    print(f"\nstreams route: {STREAM_REQUESTS} requests, statuses {sorted(outcomes.items())}")
