"""Nothing secret reaches a span, and upstream failures are errors on both spans.

Each test scans everything an exporter would ship (names, attributes, events, links, status
descriptions) for the injected secret, the bearer token, cookies, and the client's filter.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from aiohttp import web
from opentelemetry.trace import SpanKind, StatusCode
from otel_kit import Recorder, dumped, shape_chain

from electric_proxy import Credentials, RequestId, ShapeProxy, UpstreamSettings
from electric_proxy.testing import ALICE, RunningUpstream, auth, free_port

WRONG_TOKEN = "otel-token-nobody-knows-99999"
COOKIE = "session-cookie-value-3c9a"
PARAM = "needle-param-value-7d1e"
CLIENT_SECRET = "client-guessed-secret-51f0"
SECRET = "injected-upstream-secret-8e2b"


def assert_clean(text: str, *also: str) -> None:
    for needle in (ALICE, WRONG_TOKEN, COOKIE, PARAM, CLIENT_SECRET, SECRET, *also):
        assert needle not in text, needle
    for word in ("where", "params", "title", "secret", "acme", "Bearer", "?"):
        assert word not in text, word


async def test_no_secret_token_or_filter_reaches_a_span(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    spans = Recorder()
    rule = {"client_where": True, "filter_columns": {"title": "text", "done": "bool"}}
    chain = [spans.step(), RequestId(), *shape_chain(electric_upstream, **rule)]
    client = await proxy_client(chain)
    query = (
        f"table=todos&offset=-1&where={quote('title <> $1')}&params[1]={PARAM}"
        f"&secret={CLIENT_SECRET}"
    )
    headers = {**auth(ALICE), "Cookie": f"session={COOKIE}"}
    assert (await client.get(f"/v1/shape?{query}", headers=headers)).status == 200
    assert (await client.get(f"/v1/shape?{query}", headers=auth(WRONG_TOKEN))).status == 401
    bad_filter = f"table=todos&offset=-1&where={quote('title = $1) OR (true')}&params[1]={PARAM}"
    assert (await client.get(f"/v1/shape?{bad_filter}", headers=auth(ALICE))).status == 400

    finished = await spans.wait(SpanKind.SERVER, 3)
    upstream_call = await spans.one(SpanKind.CLIENT)
    # The upstream really did get the secret and the filter: the spans just never saw them.
    sent = electric_upstream.electric.requests[-1].query
    assert sent["secret"] == electric_upstream.secret and sent["params[2]"] == PARAM
    assert_clean(dumped([*finished, upstream_call]), electric_upstream.secret)


async def test_upstream_down_is_a_502_and_an_error_on_both_spans(aiohttp_client: Any) -> None:
    spans = Recorder()
    upstream = f"http://127.0.0.1:{free_port()}/v1/shape"
    proxy = ShapeProxy(upstream=upstream, chain=[spans.step(), Credentials(secret=SECRET)])
    client = await aiohttp_client(proxy.app())
    resp = await client.get("/v1/shape?offset=-1", headers=auth(ALICE))
    assert resp.status == 502

    server = await spans.one(SpanKind.SERVER)
    upstream_call = await spans.one(SpanKind.CLIENT)
    assert server.attributes is not None and upstream_call.attributes is not None
    assert server.attributes["http.response.status_code"] == 502
    assert server.attributes["error.type"] == "502"
    assert server.status.status_code == StatusCode.ERROR
    assert str(upstream_call.attributes["error.type"]).startswith("aiohttp.client_exceptions.")
    assert "http.response.status_code" not in upstream_call.attributes
    assert upstream_call.status.status_code == StatusCode.ERROR
    assert upstream_call.attributes["url.full"] == upstream
    assert upstream_call.parent is not None and server.context is not None
    assert upstream_call.parent.span_id == server.context.span_id
    assert_clean(dumped([server, upstream_call]))


async def test_upstream_silent_is_a_504_and_an_error_on_both_spans(
    aiohttp_server: Any, aiohttp_client: Any
) -> None:
    async def silent(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(10)
        raise AssertionError("the proxy should have given up")

    app = web.Application()
    app.router.add_get("/v1/shape", silent)
    upstream = await aiohttp_server(app)
    spans = Recorder()
    settings = UpstreamSettings(url=str(upstream.make_url("/v1/shape")), read_timeout=0.3)
    proxy = ShapeProxy(upstream=settings, chain=[spans.step(), Credentials(secret=SECRET)])
    client = await aiohttp_client(proxy.app())
    assert (await client.get("/v1/shape?offset=-1")).status == 504

    server = await spans.one(SpanKind.SERVER)
    upstream_call = await spans.one(SpanKind.CLIENT)
    assert server.attributes is not None and upstream_call.attributes is not None
    assert server.attributes["error.type"] == "504"
    assert server.status.status_code == StatusCode.ERROR
    assert "Timeout" in str(upstream_call.attributes["error.type"])
    assert upstream_call.status.status_code == StatusCode.ERROR
    # aiohttp's timeout messages quote the request URL, secret included: none is kept.
    assert upstream_call.status.description is None
    assert upstream_call.events == ()
    assert_clean(dumped([server, upstream_call]))
