"""Upstream answers are not trusted to be clean: error bodies reach the client in the proxy's
words, and the upstream's own text goes only to the log, masked."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from electric_proxy import (
    BearerAuth,
    Credentials,
    ShapePolicy,
    ShapeProxy,
    StaticToken,
    StreamPolicy,
    StreamProxy,
    StreamRule,
)
from electric_proxy.testing import ALICE, auth

SECRET = "electric-secret-4d9a7c1b2e"
SOURCE_ID = "source-id-77f0e1d2"
SERVER_FILTER = "org_id = :org_id AND deleted_at IS NULL"

Answer = Callable[[web.Request], web.Response]


def _echo_url(request: web.Request) -> web.Response:
    # A crash page that quotes the request, the way many servers' 500s do.
    return web.Response(status=500, text=f"<h1>Internal error</h1><pre>{request.url}</pre>")


def _electric_400_on_where(request: web.Request) -> web.Response:
    body = {"message": "Invalid request", "errors": {"where": ["unknown reference deleted_at"]}}
    return web.json_response(body, status=400, headers={"Cache-Control": "no-store"})


def _electric_400_on_offset(request: web.Request) -> web.Response:
    body = {"message": "Invalid request", "errors": {"offset": ["has invalid format"]}}
    return web.json_response(body, status=400)


def _json_echoing_the_secret(request: web.Request) -> web.Response:
    body = {"message": f"bad secret {request.query.get('secret')}", "code": "bad_secret"}
    return web.json_response(body, status=401)


def _gzipped_echo(request: web.Request) -> web.Response:
    text = json.dumps({"message": str(request.url)}).encode()
    return web.Response(
        status=503,
        body=gzip.compress(text),
        headers={
            "Content-Encoding": "gzip",
            "Content-Type": "application/json",
            "Retry-After": "7",
            "electric-internal-known-error": "true",
        },
    )


def _must_refetch(request: web.Request) -> web.Response:
    return web.Response(
        status=409,
        text='[{"headers":{"control":"must-refetch"}}]',
        content_type="application/json",
        headers={"electric-handle": "new-handle-1"},
    )


def _hostile_409(request: web.Request) -> web.Response:
    return web.Response(status=409, text=f"conflict at {request.url}")


def _ok(request: web.Request) -> web.Response:
    return web.Response(text="[]", content_type="application/json")


@pytest.fixture
async def shape_proxy(aiohttp_server: Any, aiohttp_client: Any) -> Any:
    answers: dict[str, Answer] = {"now": _ok}

    async def electric(request: web.Request) -> web.Response:
        return answers["now"](request)

    upstream = web.Application()
    upstream.router.add_get("/v1/shape", electric)
    server = await aiohttp_server(upstream)
    token = StaticToken(token=ALICE, sub="alice", claims={"org_id": "acme-tenant"})
    proxy = ShapeProxy(
        upstream=str(server.make_url("/v1/shape")),
        chain=[
            BearerAuth(tokens=[token]),
            ShapePolicy(shapes={"todos": {"where": SERVER_FILTER}}),
            Credentials(secret=SECRET, source_id=SOURCE_ID),
        ],
    )
    client = await aiohttp_client(proxy.app())
    return client, answers


_NEVER_SHOWN = (SECRET, SOURCE_ID, "deleted_at", "acme-tenant", "org_id", "127.0.0.1")


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (_echo_url, 500),
        (_electric_400_on_where, 400),
        (_json_echoing_the_secret, 401),
        (_gzipped_echo, 503),
    ],
)
async def test_error_bodies_never_show_what_the_proxy_decided(
    shape_proxy: Any, answer: Answer, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    client, answers = shape_proxy
    answers["now"] = answer
    with caplog.at_level(logging.DEBUG):
        resp = await client.get("/v1/shape?offset=-1&table=todos", headers=auth(ALICE))
        text = await resp.text()
    assert resp.status == status  # the upstream's status, kept
    body = json.loads(text)
    assert set(body) >= {"error", "message"}
    assert resp.headers["Content-Type"].startswith("application/json")
    assert "Content-Encoding" not in resp.headers
    for value in _NEVER_SHOWN:
        assert value not in text, value
    logged = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("electric_proxy")
    )
    assert "upstream answered" in logged
    # The operator's log keeps Electric's diagnosis, never a secret or a bound claim value.
    for value in (SECRET, SOURCE_ID, "acme-tenant"):
        assert value not in logged, value


async def test_a_400_about_the_servers_filter_names_it_without_quoting_it(
    shape_proxy: Any,
) -> None:
    client, answers = shape_proxy
    answers["now"] = _electric_400_on_where
    resp = await client.get("/v1/shape?offset=-1", headers=auth(ALICE))
    body = await resp.json()
    assert resp.status == 400
    assert body["error"] == "bad_request"
    assert body["refused_parameters"] == ["where"]
    assert "where" in body["message"]


async def test_a_400_about_the_clients_own_parameter_keeps_electrics_words(
    shape_proxy: Any,
) -> None:
    client, answers = shape_proxy
    answers["now"] = _electric_400_on_offset
    resp = await client.get("/v1/shape?offset=zzz", headers=auth(ALICE))
    body = await resp.json()
    assert resp.status == 400
    assert body["fields"] == {"offset": ["has invalid format"]}
    assert body["message"] == "Invalid request"


async def test_retry_headers_survive(shape_proxy: Any) -> None:
    client, answers = shape_proxy
    answers["now"] = _gzipped_echo
    resp = await client.get("/v1/shape?offset=-1", headers=auth(ALICE))
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "7"
    assert resp.headers["electric-internal-known-error"] == "true"
    assert resp.headers["Cache-Control"] == "no-store"


async def test_the_409_the_client_needs_passes_and_nothing_else_does(shape_proxy: Any) -> None:
    client, answers = shape_proxy
    answers["now"] = _must_refetch
    resp = await client.get("/v1/shape?offset=0_0&handle=old", headers=auth(ALICE))
    assert resp.status == 409
    assert await resp.json() == [{"headers": {"control": "must-refetch"}}]
    assert resp.headers["electric-handle"] == "new-handle-1"

    answers["now"] = _hostile_409
    resp = await client.get("/v1/shape?offset=0_0&handle=old", headers=auth(ALICE))
    text = await resp.text()
    assert resp.status == 409
    assert json.loads(text) == [{"headers": {"control": "must-refetch"}}]
    assert SECRET not in text


async def test_success_bodies_pass_untouched(shape_proxy: Any) -> None:
    client, _ = shape_proxy
    resp = await client.get("/v1/shape?offset=-1", headers=auth(ALICE))
    assert resp.status == 200
    assert await resp.read() == b"[]"


async def test_stream_errors_are_replaced_too(aiohttp_server: Any, aiohttp_client: Any) -> None:
    async def durable(request: web.Request) -> web.Response:
        return web.Response(
            status=409,
            text=f"stream exists, see {request.url} auth={request.headers.get('Authorization')}",
            headers={"Stream-Next-Offset": "42", "Producer-Expected-Seq": "3"},
        )

    upstream = web.Application()
    upstream.router.add_route("*", "/v1/stream/svc-secret-id/{tail:.+}", durable)
    server = await aiohttp_server(upstream)
    proxy = StreamProxy(
        upstream=str(server.make_url("/v1/stream/svc-secret-id")),
        chain=[
            BearerAuth(tokens=[StaticToken(token=ALICE, sub="alice")]),
            StreamPolicy(rules=[StreamRule(paths=["**"], allow=["create"])]),
            Credentials(bearer=SECRET),
        ],
    )
    client = await aiohttp_client(proxy.app())
    resp = await client.put("/v1/stream/a/b", headers=auth(ALICE))
    text = await resp.text()
    assert resp.status == 409
    assert json.loads(text)["error"] == "conflict"
    assert resp.headers["Stream-Next-Offset"] == "42"
    assert resp.headers["Producer-Expected-Seq"] == "3"
    for value in (SECRET, "svc-secret-id", "127.0.0.1"):
        assert value not in text
