"""CORS: opt-in origins, preflights before auth, explicit exposed headers, no duplicates."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import standard_chain
from pydantic import ValidationError

from electric_proxy import Cors
from electric_proxy.protocol import ELECTRIC_EXPOSED_HEADERS
from electric_proxy.testing import ALICE, RunningUpstream, auth

APP = "https://app.example"


@pytest.fixture
async def client(proxy_client: Any, electric_upstream: RunningUpstream) -> Any:
    cors = Cors(allow_origins=[APP], allow_credentials=True)
    return await proxy_client([cors, *standard_chain(electric_upstream)])


async def test_preflight_is_answered_before_authentication(
    client: Any, electric_upstream: RunningUpstream
) -> None:
    resp = await client.options(
        "/v1/shape",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    allowed = {h.strip() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "if-none-match", "traceparent"} <= allowed
    assert "Origin" in resp.headers["Vary"]
    assert electric_upstream.electric.requests == []


async def test_responses_expose_the_electric_headers_once(client: Any) -> None:
    resp = await client.get("/v1/shape?offset=-1", headers={"Origin": APP, **auth(ALICE)})
    assert resp.status == 200
    assert resp.headers.getall("Access-Control-Allow-Origin") == [APP]
    exposed = [h.strip() for h in resp.headers["Access-Control-Expose-Headers"].split(",")]
    assert exposed[: len(ELECTRIC_EXPOSED_HEADERS)] == list(ELECTRIC_EXPOSED_HEADERS)
    assert "*" not in exposed
    # Electric's own (any origin, DELETE allowed) answer is gone, not duplicated.
    assert (
        resp.headers.getall("Access-Control-Expose-Headers", []) != []
        and len(resp.headers.getall("Access-Control-Expose-Headers")) == 1
    )
    assert "Access-Control-Allow-Methods" not in resp.headers


async def test_errors_carry_cors_so_the_browser_can_read_them(client: Any) -> None:
    resp = await client.get("/v1/shape?offset=-1", headers={"Origin": APP})
    assert resp.status == 401
    assert resp.headers["Access-Control-Allow-Origin"] == APP


async def test_foreign_origins_get_nothing(client: Any, electric_upstream: RunningUpstream) -> None:
    evil = {"Origin": "https://evil.example"}
    preflight = await client.options(
        "/v1/shape", headers={**evil, "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status == 403
    assert "Access-Control-Allow-Origin" not in preflight.headers
    resp = await client.get("/v1/shape?offset=-1", headers={**evil, **auth(ALICE)})
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "Origin" in resp.headers["Vary"]


def test_wildcard_never_with_credentials() -> None:
    with pytest.raises(ValidationError, match="cannot be combined"):
        Cors(allow_origins=["*"], allow_credentials=True)
    with pytest.raises(ValidationError, match="is not an origin"):
        Cors(allow_origins=["https://app.example/path"])
    assert Cors(allow_origins=["*"])._allowed("https://any.example") == "*"


def _listed(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


async def test_each_endpoint_preflight_allows_its_own_methods(
    aiohttp_client: Any, aiohttp_server: Any, client: Any
) -> None:
    """Measured before: the streams route answered the shape route's methods, so a browser's
    PUT or DELETE failed while POST worked."""
    from aiohttp import web

    from electric_proxy import StreamProxy

    upstream = await aiohttp_server(web.Application())
    streams = StreamProxy(
        upstream=str(upstream.make_url("/v1/stream")),
        chain=[Cors(allow_origins=[APP], allow_credentials=True)],
    )
    stream_client = await aiohttp_client(streams.app())
    for method in ("PUT", "DELETE", "POST"):
        resp = await stream_client.options(
            "/v1/stream/chats/a",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization, content-type, stream-ttl",
            },
        )
        assert resp.status == 204
        methods = _listed(resp.headers["Access-Control-Allow-Methods"])
        assert methods == {"get", "head", "post", "put", "delete", "options"}
        allowed = _listed(resp.headers["Access-Control-Allow-Headers"])
        assert {"authorization", "content-type", "stream-ttl", "producer-id"} <= allowed

    resp = await client.options(
        "/v1/shape", headers={"Origin": APP, "Access-Control-Request-Method": "GET"}
    )
    methods = _listed(resp.headers["Access-Control-Allow-Methods"])
    assert methods == {"get", "head", "post", "options"}
    assert "stream-ttl" not in _listed(resp.headers["Access-Control-Allow-Headers"])
