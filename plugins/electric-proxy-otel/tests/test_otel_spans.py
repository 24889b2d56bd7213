"""The span tree: a SERVER span per request, the upstream call its CLIENT child, and the
``traceparent`` Electric receives; incoming context continued only when trusted."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from opentelemetry.trace import SpanKind, StatusCode
from otel_kit import Recorder, dumped, shape_chain, traceparent

from electric_proxy import Credentials, RequestId, StreamProxy
from electric_proxy.testing import ALICE, RunningUpstream, auth

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_SPAN = "00f067aa0ba902b7"
INCOMING = {"traceparent": f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01", "tracestate": "vendor=abc"}


async def test_server_span_parents_the_upstream_call(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    spans = Recorder()
    client = await proxy_client([spans.step(), *shape_chain(electric_upstream)])
    resp = await client.get("/v1/shape?table=todos&offset=-1", headers=auth(ALICE))
    assert resp.status == 200
    await resp.read()

    server = await spans.one(SpanKind.SERVER)
    upstream_call = await spans.one(SpanKind.CLIENT)
    assert server.name == "GET /v1/shape"
    assert upstream_call.name == "GET"
    assert server.parent is None
    assert upstream_call.parent is not None and server.context is not None
    assert upstream_call.parent.span_id == server.context.span_id
    assert upstream_call.context is not None
    assert upstream_call.context.trace_id == server.context.trace_id

    received = electric_upstream.electric.requests[-1].headers
    assert received.getall("traceparent") == [traceparent(upstream_call)]
    assert "tracestate" not in received

    assert server.attributes is not None
    assert dict(server.attributes) == {
        "http.request.method": "GET",
        "url.path": "/v1/shape",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "http.route": "/v1/shape",
        "electric_proxy.shape.offset": "-1",
        "http.response.status_code": 200,
    }
    assert server.status.status_code == StatusCode.UNSET
    assert upstream_call.attributes is not None
    assert upstream_call.attributes["url.full"] == electric_upstream.url
    assert upstream_call.attributes["http.response.status_code"] == 200
    assert upstream_call.attributes["server.port"] == electric_upstream.server.port
    assert upstream_call.status.status_code == StatusCode.UNSET


async def test_an_untrusted_traceparent_is_linked_not_continued(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    spans = Recorder()
    client = await proxy_client([spans.step(), *shape_chain(electric_upstream)])
    resp = await client.get("/v1/shape?table=todos&offset=-1", headers={**auth(ALICE), **INCOMING})
    assert resp.status == 200

    server = await spans.one(SpanKind.SERVER)
    upstream_call = await spans.one(SpanKind.CLIENT)
    assert server.parent is None
    assert server.context is not None
    assert f"{server.context.trace_id:032x}" != INCOMING_TRACE
    [link] = server.links
    assert f"{link.context.trace_id:032x}" == INCOMING_TRACE
    assert f"{link.context.span_id:016x}" == INCOMING_SPAN
    # Electric hears of the proxy's trace only; the client's tracestate stays out.
    received = electric_upstream.electric.requests[-1].headers
    assert received.getall("traceparent") == [traceparent(upstream_call)]
    assert "tracestate" not in received


async def test_a_trusted_traceparent_is_continued(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    spans = Recorder()
    step = spans.step(trust_incoming_context=True)
    client = await proxy_client([step, *shape_chain(electric_upstream)])
    resp = await client.get("/v1/shape?table=todos&offset=-1", headers={**auth(ALICE), **INCOMING})
    assert resp.status == 200

    server = await spans.one(SpanKind.SERVER)
    upstream_call = await spans.one(SpanKind.CLIENT)
    assert server.parent is not None and server.parent.is_remote
    assert f"{server.parent.trace_id:032x}" == INCOMING_TRACE
    assert f"{server.parent.span_id:016x}" == INCOMING_SPAN
    assert server.links == ()
    received = electric_upstream.electric.requests[-1].headers
    assert received["traceparent"] == traceparent(upstream_call)
    assert received["traceparent"].startswith(f"00-{INCOMING_TRACE}-")
    assert received["tracestate"] == "vendor=abc"


async def test_a_trusted_but_malformed_traceparent_starts_a_new_trace(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    spans = Recorder()
    step = spans.step(trust_incoming_context=True)
    client = await proxy_client([step, *shape_chain(electric_upstream)])
    headers = {**auth(ALICE), "traceparent": "00-zz-not-a-trace-01"}
    assert (await client.get("/v1/shape?table=todos&offset=-1", headers=headers)).status == 200
    server = await spans.one(SpanKind.SERVER)
    assert server.parent is None
    upstream_call = await spans.one(SpanKind.CLIENT)
    received = electric_upstream.electric.requests[-1].headers
    assert received.getall("traceparent") == [traceparent(upstream_call)]


async def test_request_id_and_principal_are_recorded_when_asked(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    spans = Recorder()
    chain = [spans.step(record_principal=True), RequestId(), *shape_chain(electric_upstream)]
    client = await proxy_client(chain)
    resp = await client.get("/v1/shape?table=todos&offset=-1", headers=auth(ALICE))
    assert resp.status == 200
    server = await spans.one(SpanKind.SERVER)
    assert server.attributes is not None
    assert server.attributes["electric_proxy.request_id"] == resp.headers["X-Request-ID"]
    assert server.attributes["enduser.id"] == "alice"


async def test_the_principal_is_not_recorded_by_default(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    spans = Recorder()
    client = await proxy_client([spans.step(), *shape_chain(electric_upstream)])
    assert (await client.get("/v1/shape?table=todos&offset=-1", headers=auth(ALICE))).status == 200
    server = await spans.one(SpanKind.SERVER)
    assert server.attributes is not None
    assert "enduser.id" not in server.attributes
    assert "electric_proxy.request_id" not in server.attributes


async def test_refused_requests_have_no_upstream_span(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    spans = Recorder()
    client = await proxy_client([spans.step(), *shape_chain(electric_upstream)])
    assert (await client.get("/v1/shape?table=todos&offset=-1")).status == 401
    forbidden = await client.get("/v1/shape?table=secrets&offset=-1", headers=auth(ALICE))
    assert forbidden.status == 403

    unauthorized, refused = await spans.wait(SpanKind.SERVER, 2)
    for span, status in ((unauthorized, 401), (refused, 403)):
        assert span.attributes is not None
        assert span.attributes["http.response.status_code"] == status
        assert "error.type" not in span.attributes
        # A 4xx is the client's doing: not an error of the server (HTTP semantic conventions).
        assert span.status.status_code == StatusCode.UNSET
    assert spans.finished(SpanKind.CLIENT) == []
    assert electric_upstream.electric.requests == []


async def test_client_span_marks_an_electric_4xx(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    spans = Recorder()
    client = await proxy_client([spans.step(), *shape_chain(electric_upstream)])
    resp = await client.get(
        "/v1/shape?table=todos&offset=0_0&handle=no-such-handle", headers=auth(ALICE)
    )
    assert resp.status == 409
    upstream_call = await spans.one(SpanKind.CLIENT)
    server = await spans.one(SpanKind.SERVER)
    assert upstream_call.attributes is not None and server.attributes is not None
    assert upstream_call.attributes["error.type"] == "409"
    assert upstream_call.status.status_code == StatusCode.ERROR
    assert server.attributes["electric_proxy.shape.handle"] == "no-such-handle"
    assert server.status.status_code == StatusCode.UNSET


async def test_the_streams_endpoint_is_traced_by_its_route(
    aiohttp_server: Any, aiohttp_client: Any
) -> None:
    seen: list[web.Request] = []

    async def streams(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        return web.Response(body=b"[]", headers={"Stream-Next-Offset": "1"})

    app = web.Application()
    app.router.add_get("/v1/stream/svc-test/{name:.+}", streams)
    upstream = await aiohttp_server(app)
    spans = Recorder()
    bearer = "streams-service-secret-1234567"
    proxy = StreamProxy(
        upstream=str(upstream.make_url("/v1/stream/svc-test")),
        chain=[spans.step(), Credentials(bearer=bearer)],
    )
    client = await aiohttp_client(proxy.app())
    resp = await client.get("/v1/stream/chats/room-1?offset=-1&live=long-poll")
    assert resp.status == 200

    server = await spans.one(SpanKind.SERVER)
    upstream_call = await spans.one(SpanKind.CLIENT)
    assert server.name == "GET /v1/stream/{stream_path}"
    assert server.attributes is not None and upstream_call.attributes is not None
    assert server.attributes["http.route"] == "/v1/stream/{stream_path}"
    assert server.attributes["url.path"] == "/v1/stream/chats/room-1"
    assert not any(key.startswith("electric_proxy.shape.") for key in server.attributes)
    expected = str(upstream.make_url("/v1/stream/svc-test/chats/room-1"))
    assert upstream_call.attributes["url.full"] == expected
    assert seen[-1].headers["traceparent"] == traceparent(upstream_call)
    assert bearer not in dumped([server, upstream_call])
