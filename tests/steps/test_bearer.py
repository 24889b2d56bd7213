"""Static and callback bearer authentication."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from conftest import send_raw, standard_chain
from pydantic import ValidationError

from electric_proxy import BearerAuth, Cors, Principal, StaticToken
from electric_proxy.testing import ALICE, RunningUpstream, auth


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Bearer not-a-known-token-at-all"}, "invalid_token"),
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "invalid_request"),
        ({"Authorization": "Bearer "}, "invalid_request"),
    ],
)
async def test_unauthenticated_requests_never_reach_the_upstream(
    proxy_client: Any, electric_upstream: RunningUpstream, headers: dict[str, str], code: str
) -> None:
    client = await proxy_client(standard_chain(electric_upstream))
    resp = await client.get("/v1/shape?offset=-1", headers=headers)
    assert resp.status == 401
    assert (await resp.json())["error"] == code
    assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
    assert electric_upstream.electric.requests == []


async def test_valid_token_sets_the_principal(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    client = await proxy_client(standard_chain(electric_upstream))
    resp = await client.get("/v1/shape?offset=-1", headers=auth(ALICE))
    assert resp.status == 200
    assert electric_upstream.electric.requests[-1].query["params[1]"] == "acme"


async def test_callback_reuses_the_apps_session(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    async def from_cookie(request: web.Request) -> Principal | None:
        if request.cookies.get("sid") == "s1":
            return Principal("carol", {"org_id": "globex"})
        return None

    client = await proxy_client(
        [BearerAuth(callback=from_cookie), *standard_chain(electric_upstream)[1:]]
    )
    assert (await client.get("/v1/shape?offset=-1")).status == 401
    resp = await client.get("/v1/shape?offset=-1", cookies={"sid": "s1"})
    assert resp.status == 200
    assert electric_upstream.electric.requests[-1].query["params[1]"] == "globex"


def test_options_are_validated() -> None:
    with pytest.raises(ValidationError):
        BearerAuth()
    with pytest.raises(ValidationError):
        StaticToken(token="short", sub="x")
    with pytest.raises(ValidationError):
        BearerAuth(
            tokens=[StaticToken(token="t" * 20, sub="a"), StaticToken(token="t" * 20, sub="b")]
        )


@pytest.mark.parametrize(
    "token",
    [
        b"token-alice-\xe9\xff-acme",
        b"token alice",
        "tökén-alice-acme".encode(),
        b"tok=en-alice-acme",
    ],
)
async def test_a_token_that_is_not_token68_is_invalid_request_with_cors(
    proxy_client: Any, electric_upstream: RunningUpstream, token: bytes
) -> None:
    """Sent as raw bytes: aiohttp's client would refuse to send a non-ASCII header."""
    cors = Cors(allow_origins=["https://app.example"])
    client = await proxy_client([cors, *standard_chain(electric_upstream)])
    request = (
        b"GET /v1/shape?offset=-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Origin: https://app.example\r\nAuthorization: Bearer " + token + b"\r\n\r\n"
    )
    status, headers, body = await send_raw(client.port, request)
    assert status == 401
    assert json.loads(body)["error"] == "invalid_request"
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert electric_upstream.electric.requests == []


def test_a_configured_token_no_client_can_send_is_refused() -> None:
    with pytest.raises(ValidationError, match="may hold only"):
        StaticToken(token="a token with spaces in it", sub="x")
