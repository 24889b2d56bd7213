"""Routing and the gate: exact path, methods, duplicate keys, what the query is built from."""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import send_raw, standard_chain

from electric_proxy import (
    PRINCIPAL,
    UPSTREAM,
    Cors,
    Forbidden,
    Handler,
    ShapeProxy,
    Step,
    parse_config,
)
from electric_proxy.testing import ALICE, RunningUpstream, auth


@pytest.mark.parametrize(
    "path",
    [
        "/v1/shape/",
        "//v1/shape",
        "/v1/%73hape",
        "/V1/shape",
        "/v1/shape%2F",
        "/v1//shape",
        "/v1/shape/..",
        "/v1/./shape",
    ],
)
async def test_path_variants_never_reach_the_upstream(
    shape_client: Any, electric_upstream: RunningUpstream, path: str
) -> None:
    # Sent as raw bytes: an HTTP client library would normalise the very variants tested.
    status, headers, body = await send_raw(
        shape_client.server.port,
        f"GET {path}?offset=-1 HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {ALICE}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert status in (400, 404)
    assert headers["content-type"].startswith("application/json")
    assert headers["cache-control"] == "no-store"
    assert json.loads(body)["error"] in ("bad_request", "not_found")
    assert "electric-handle" not in headers
    assert electric_upstream.electric.requests == []


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_other_methods_are_refused_with_json(
    shape_client: Any, electric_upstream: RunningUpstream, method: str
) -> None:
    resp = await shape_client.request(method, "/v1/shape?offset=-1", headers=auth(ALICE))
    assert resp.status == 405
    assert (await resp.json())["error"] == "method_not_allowed"
    assert resp.headers["Allow"] == "GET, HEAD, OPTIONS, POST"
    assert electric_upstream.electric.requests == []


async def test_options_is_answered_locally(
    shape_client: Any, electric_upstream: RunningUpstream
) -> None:
    resp = await shape_client.options("/v1/shape")
    assert resp.status == 204
    assert electric_upstream.electric.requests == []


@pytest.mark.parametrize(
    "query",
    [
        "offset=-1&offset=0_0",
        "table=todos&table=users&offset=-1",
        "offset=-1&where=done&where=true",
        "offset=-1&params%5B1%5D=a&params[1]=b",
        "offset=-1&secret=a&secret=b",
    ],
)
async def test_repeated_protocol_keys_are_a_400(
    shape_client: Any, electric_upstream: RunningUpstream, query: str
) -> None:
    resp = await shape_client.get("/v1/shape?" + query, headers=auth(ALICE))
    assert resp.status == 400
    assert (await resp.json())["error"] == "duplicate_parameter"
    assert electric_upstream.electric.requests == []


async def test_upstream_query_is_built_from_scratch(
    shape_client: Any, electric_upstream: RunningUpstream
) -> None:
    resp = await shape_client.get(
        "/v1/shape",
        params={
            "offset": "-1",
            "log": "full",
            "cache-buster": "x1",
            "table": "todos",
            "columns": "secret_col",
            "replica": "full",
            "secret": "mine",
            "source_id": "x",
            "api_secret": "mine",
            "queryable_columns": "x",
            "experimental_compaction": "true",
            "whatever": "1",
        },
        headers=auth(ALICE),
    )
    assert resp.status == 200
    sent = electric_upstream.electric.requests[-1].query
    assert sorted(sent.keys()) == sorted(
        [
            "offset",
            "log",
            "cache-buster",
            "table",
            "columns",
            "queryable_columns",
            "where",
            "params[1]",
            "secret",
        ]
    )
    assert sent["columns"] == "id,org_id,title,done"
    assert sent["queryable_columns"] == "id,org_id,title,done"  # the policy's, not the client's
    assert sent["secret"] == electric_upstream.secret
    assert sent["params[1]"] == "acme"


async def test_chain_runs_in_the_given_order_and_errors_unwind_through_it(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    trace: list[str] = []

    def named(name: str, fail: bool = False) -> Any:
        async def step(request: web.Request, handler: Handler) -> web.StreamResponse:
            trace.append(f"{name}>")
            if fail:
                raise Forbidden("no")
            resp = await handler(request)
            resp.headers.add("X-Trace", name)
            trace.append(f"<{name}")
            return resp

        return step

    client = await proxy_client([named("c"), named("a"), named("b", fail=True), named("z")])
    resp = await client.get("/v1/shape?offset=-1")
    assert resp.status == 403
    assert trace == ["c>", "a>", "b>", "<a", "<c"]
    assert resp.headers.getall("X-Trace") == ["a", "c"]
    assert electric_upstream.electric.requests == []


_TRACE: list[str] = []


class _Phased(Step):
    """A step written as its two phases, tracing them like ``named`` above."""

    name: str
    fail: str = ""  # "request" or "response": raise in that phase

    async def on_request(self, request: web.Request) -> None:
        _TRACE.append(f"{self.name}>")
        if self.fail == "request":
            raise Forbidden("no")

    def on_response(self, request: web.Request, response: web.StreamResponse) -> None:
        if self.fail == "response":
            raise RuntimeError("broken on the way out")
        response.headers.add("X-Trace", self.name)
        _TRACE.append(f"<{self.name}")


def _middleware(name: str, fail: str = "") -> Any:
    async def step(request: web.Request, handler: Handler) -> web.StreamResponse:
        _TRACE.append(f"{name}>")
        if fail == "request":
            raise Forbidden("no")
        resp = await handler(request)
        if fail == "response":
            raise RuntimeError("broken on the way out")
        resp.headers.add("X-Trace", name)
        _TRACE.append(f"<{name}")
        return resp

    return step


# Each letter says how the step at that place is written: p(hased) or m(iddleware).
@pytest.mark.parametrize("kinds", ["pppp", "mmmm", "pmpm", "mppm", "ppmp", "mmpp"])
async def test_phased_and_middleware_steps_mix_with_the_same_order_and_unwinding(
    proxy_client: Any, electric_upstream: RunningUpstream, kinds: str
) -> None:
    def chain(fail_at: str, fail: str) -> list[Any]:
        return [
            _Phased(name=n, fail=fail if n == fail_at else "")
            if kind == "p"
            else _middleware(n, fail if n == fail_at else "")
            for n, kind in zip("cabz", kinds, strict=True)
        ]

    _TRACE.clear()
    client = await proxy_client(chain("b", "request"))
    resp = await client.get("/v1/shape?offset=-1")
    assert resp.status == 403
    assert _TRACE == ["c>", "a>", "b>", "<a", "<c"]
    assert resp.headers.getall("X-Trace") == ["a", "c"]
    assert electric_upstream.electric.requests == []

    _TRACE.clear()
    client = await proxy_client(chain("a", "response"))
    resp = await client.get("/v1/shape?offset=-1")
    assert resp.status == 500  # the upstream's answer is replaced where the step broke
    assert (await resp.json())["error"] == "internal_error"
    assert _TRACE == ["c>", "a>", "b>", "z>", "<z", "<b", "<c"]
    assert resp.headers.getall("X-Trace") == ["c"]
    assert len(electric_upstream.electric.requests) == 1


async def test_a_phased_step_answering_early_skips_the_rest_but_not_the_outer_steps(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    class Teapot(_Phased):
        async def on_request(self, request: web.Request) -> web.StreamResponse:
            _TRACE.append(f"{self.name}>")
            return web.Response(status=418)

    _TRACE.clear()
    client = await proxy_client([_Phased(name="c"), Teapot(name="t"), _Phased(name="z")])
    resp = await client.get("/v1/shape?offset=-1")
    assert resp.status == 418
    assert _TRACE == ["c>", "t>", "<c"]  # its own on_response is for answers it let through
    assert resp.headers.getall("X-Trace") == ["c"]
    assert electric_upstream.electric.requests == []


async def test_state_is_typed_per_request(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    seen: list[Any] = []

    async def look(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append((request.get(PRINCIPAL), request[UPSTREAM].method))
        return await handler(request)

    client = await proxy_client([*standard_chain(electric_upstream)[:1], look])
    await client.get("/v1/shape?offset=-1", headers=auth(ALICE))
    assert seen[0][0].id == "alice"
    assert seen[0][1] == "GET"


async def test_mounted_as_a_sub_app_under_a_prefix(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    proxy = ShapeProxy(upstream=electric_upstream.url, chain=standard_chain(electric_upstream))
    app = web.Application()
    app.add_subapp("/electric", proxy.app())
    client = await aiohttp_client(app)
    resp = await client.get("/electric/v1/shape?offset=-1", headers=auth(ALICE))
    assert resp.status == 200
    assert (await client.get("/electric/v1/shape/?offset=-1", headers=auth(ALICE))).status == 404


async def test_steps_can_trace_the_upstream_call(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    calls: list[tuple[str, str]] = []

    async def on_start(session: Any, ctx: Any, params: aiohttp.TraceRequestStartParams) -> None:
        calls.append(("start", params.url.path))

    async def on_end(session: Any, ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
        calls.append(("end", str(params.response.status)))

    class Traced(Step):
        async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
            return await handler(request)

        def upstream_trace_configs(self) -> list[aiohttp.TraceConfig]:
            config = aiohttp.TraceConfig()
            config.on_request_start.append(on_start)
            config.on_request_end.append(on_end)
            return [config]

    client = await proxy_client([Traced(), *standard_chain(electric_upstream)])
    resp = await client.get("/v1/shape?offset=-1", headers=auth(ALICE))
    assert resp.status == 200
    assert calls == [("start", "/v1/shape"), ("end", "200")]


async def test_a_crashing_step_is_a_json_500_the_outer_steps_still_decorate(
    proxy_client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: web.Request, handler: Handler) -> web.StreamResponse:
        raise KeyError(request.headers["Authorization"])

    cors = Cors(allow_origins=["https://app.example"])
    client = await proxy_client([cors, broken, *standard_chain(electric_upstream)])
    with caplog.at_level(logging.DEBUG):
        resp = await client.get(
            "/v1/shape?offset=-1&where=secret_filter",
            headers={**auth(ALICE), "Origin": "https://app.example"},
        )
    assert resp.status == 500
    assert (await resp.json())["error"] == "internal_error"
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert electric_upstream.electric.requests == []
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "KeyError" in logged and "broken" in logged
    assert ALICE not in logged and "secret_filter" not in logged


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/v1/shape/", 404, "not_found"),
        ("POST", "/healthz", 405, "method_not_allowed"),
    ],
)
async def test_what_the_router_answers_is_the_proxys_json(
    aiohttp_client: Any,
    electric_upstream: RunningUpstream,
    method: str,
    path: str,
    status: int,
    code: str,
) -> None:
    config = parse_config({"upstream": {"url": electric_upstream.url}})
    client = await aiohttp_client(config.app())
    resp = await client.request(method, path)
    assert resp.status == status
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.headers["Cache-Control"] == "no-store"
    assert (await resp.json())["error"] == code
    assert resp.headers["Server"] == "electric-proxy"
    if status == 405:
        assert "GET" in resp.headers["Allow"]


async def test_the_server_header_names_no_versions(
    shape_client: Any, electric_upstream: RunningUpstream
) -> None:
    """Electric's own header (here aiohttp's, with versions) is replaced as well."""
    ok = await shape_client.get("/v1/shape?offset=-1", headers=auth(ALICE))
    refused = await shape_client.get("/v1/shape?offset=-1")
    assert (ok.status, refused.status) == (200, 401)
    assert ok.headers["Server"] == refused.headers["Server"] == "electric-proxy"


async def test_setup_leaves_the_embedding_apps_own_answers_alone(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    app = web.Application()
    ShapeProxy(upstream=electric_upstream.url, chain=standard_chain(electric_upstream)).setup(app)
    client = await aiohttp_client(app)
    resp = await client.get("/nope")
    assert resp.status == 404
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.headers["Server"].startswith("Python/")
