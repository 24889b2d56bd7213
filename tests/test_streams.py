"""The streams route: path mapping, raw forwarding, streamed bodies, credential injection."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from electric_proxy import (
    Credentials,
    StreamPolicy,
    StreamProxy,
    StreamRule,
    parse_config,
)
from electric_proxy.standin import DurableStreams
from electric_proxy.testing import ALICE, BOB, auth, two_users

SERVICE_SECRET = "svc-secret-0123456789abcdef"


@pytest.fixture
async def streams(aiohttp_server: Any, aiohttp_client: Any) -> tuple[Any, DurableStreams]:
    upstream = DurableStreams()
    server = await aiohttp_server(upstream.app())
    proxy = StreamProxy(
        upstream=str(server.make_url("/v1/stream/svc-test")),
        chain=[
            two_users(),
            StreamPolicy(
                rules=[
                    StreamRule(paths=["chats/{sub}/**"], allow=["read", "append", "create"]),
                    StreamRule(paths=["orgs/{org_id}/*"], allow=["read"]),
                ]
            ),
            Credentials(bearer=SERVICE_SECRET),
        ],
    )
    return await aiohttp_client(proxy.app()), upstream


async def test_create_append_read_with_the_service_secret_injected(streams: Any) -> None:
    client, upstream = streams
    put = await client.put("/v1/stream/chats/alice/room%201", headers=auth(ALICE))
    assert put.status == 201
    assert put.headers["Location"] == str(client.make_url("/v1/stream/chats/alice/room%201"))
    post = await client.post(
        "/v1/stream/chats/alice/room%201",
        data=b"hi",
        headers={**auth(ALICE), "Content-Type": "text/plain"},
    )
    assert post.status == 204
    get = await client.get(
        "/v1/stream/chats/alice/room%201?offset=-1&live=long-poll", headers=auth(ALICE)
    )
    assert await get.read() == b"hi"
    assert get.headers["Stream-Forked-From"] == "/v1/stream/src"
    _, raw_path, headers = upstream.seen[-1]
    assert raw_path == "/v1/stream/svc-test/chats/alice/room%201?offset=-1&live=long-poll"
    assert headers["Authorization"] == f"Bearer {SERVICE_SECRET}"
    for resp in (put, post, get):
        assert SERVICE_SECRET not in str(resp.headers)


async def test_no_content_type_is_invented_and_bodies_stream(streams: Any) -> None:
    client, upstream = streams
    big = os.urandom(3 * 1024 * 1024)

    async def chunks() -> Any:
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    resp = await client.post(
        "/v1/stream/chats/alice/big",
        data=chunks(),
        headers={**auth(ALICE), "Content-Type": "application/octet-stream"},
    )
    assert resp.status == 204
    assert bytes(upstream.streams["chats/alice/big"]) == big
    await client.post(
        "/v1/stream/chats/alice/empty", headers=auth(ALICE), skip_auto_headers=["Content-Type"]
    )
    assert "Content-Type" not in upstream.seen[-1][2]


async def test_sse_passes_through(streams: Any) -> None:
    client, _ = streams
    resp = await client.get("/v1/stream/chats/alice/x?offset=-1&live=sse", headers=auth(ALICE))
    assert resp.headers["Content-Type"] == "text/event-stream"
    line = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
    assert line == b"event: data\ndata: hello\n\n"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/stream/chats/bob/room", 403),
        ("DELETE", "/v1/stream/chats/alice/room", 403),
        ("PUT", "/v1/stream/orgs/acme/feed", 403),
        ("GET", "/v1/stream/orgs/globex/feed", 403),
        ("GET", "/v1/stream/chats/alice/..%2F..%2Fbob/room", 400),
        ("GET", "/v1/stream/chats/alice/%2e%2e/%2e%2e/bob/room", 400),
        ("GET", "/v1/stream/chats/alice%2F..%2Fbob/room", 400),
        ("GET", "/v1/stream/chats//bob/room", 400),
        ("GET", "/v1/stream/%63hats/bob/room", 403),
        ("GET", "/v1/stream/chats/alice/__ds/subscriptions/x", 403),
        ("GET", "/v1/stream/chats/alice/%FF", 400),
    ],
)
async def test_access_policy_and_path_tricks(
    streams: Any, method: str, path: str, status: int
) -> None:
    client, upstream = streams
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer {ALICE}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
    )
    status_line = await reader.readline()
    await reader.read()
    writer.close()
    assert int(status_line.split()[1]) == status, status_line
    assert upstream.seen == []


async def test_readable_org_stream(streams: Any) -> None:
    client, _ = streams
    assert (await client.get("/v1/stream/orgs/acme/feed", headers=auth(ALICE))).status == 200
    assert (await client.get("/v1/stream/orgs/acme/feed", headers=auth(BOB))).status == 403


async def test_forking_needs_read_on_the_source(streams: Any) -> None:
    client, upstream = streams
    stolen = await client.put(
        "/v1/stream/chats/alice/copy",
        headers={**auth(ALICE), "Stream-Forked-From": "/v1/stream/chats/bob/room"},
    )
    assert stolen.status == 403
    assert upstream.seen == []
    ok = await client.put(
        "/v1/stream/chats/alice/copy",
        headers={**auth(ALICE), "Stream-Forked-From": "/v1/stream/chats/alice/room"},
    )
    assert ok.status == 201
    assert upstream.seen[-1][2]["Stream-Forked-From"] == "/v1/stream/svc-test/chats/alice/room"


async def test_client_authorization_never_reaches_the_upstream(streams: Any) -> None:
    client, upstream = streams
    await client.get("/v1/stream/chats/alice/x", headers={**auth(ALICE), "Cookie": "s=1"})
    sent = upstream.seen[-1][2]
    assert sent["Authorization"] == f"Bearer {SERVICE_SECRET}"
    assert "Cookie" not in sent


def test_streams_section_in_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMS_SECRET", SERVICE_SECRET)
    config = parse_config(
        {
            "streams": {
                "upstream": {"url": "https://api.electric-sql.cloud/v1/stream/svc-demo"},
                "chain": [
                    {"use": "stream_policy", "rules": [{"paths": ["**"], "allow": ["read"]}]},
                    {"use": "credentials", "bearer": {"$env": "STREAMS_SECRET"}},
                ],
            }
        }
    )
    assert config.upstream is None and config.streams is not None
    assert [n for n, _ in config.streams.steps] == ["stream_policy", "credentials"]
    assert SERVICE_SECRET not in str(config.describe())
    assert config.app().router.resources()
