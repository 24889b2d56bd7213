"""A page on another origin creates, appends to, reads and deletes a stream through the proxy,
in headless Chromium, with a bearer token: the browser preflights PUT, POST and DELETE (and the
GET, which carries ``Authorization``), and each must pass the ``cors`` step of the streams
chain, then auth, the stream policy and secret injection, to the Durable Streams reference
server. ``fetch_driver.mjs`` runs the fetches from page script and reports what script could
read; the proxy records what it answered.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from e2e_support import (
    Exchange,
    NodeProcess,
    node_process,
    recording_middleware,
    require_prerequisites,
)
from real_servers import reference_streams_server

from electric_proxy import (
    BearerAuth,
    Cors,
    Credentials,
    StaticToken,
    StreamPolicy,
    StreamProxy,
    StreamRule,
)
from electric_proxy.testing import serve_app

pytestmark = pytest.mark.timeout(90)

ALICE = "e2e-streams-token-alice-93be1c"
SERVICE_SECRET = "e2e-streams-service-secret-4d07"
SERVICE_PREFIX = "/v1/stream/svc-e2e"
STREAM = "chats/alice/room-1"
MESSAGE = "hello from another origin"
ALL_ACTIONS = ["read", "append", "create", "delete"]
EXPOSED = ["Stream-Next-Offset", "Stream-Up-To-Date", "Location"]
PAGE = b"<!doctype html><meta charset=utf-8><title>streams from another origin</title><p>ok"


def page_site() -> web.Application:
    async def index(request: web.Request) -> web.Response:
        headers = {"Cache-Control": "no-store"}
        return web.Response(body=PAGE, content_type="text/html", headers=headers)

    app = web.Application()
    app.router.add_get("/", index)
    return app


@contextlib.asynccontextmanager
async def streams_proxy(
    upstream: str, page_origin: str, exchanges: list[Exchange]
) -> AsyncIterator[str]:
    """The streams route with ``cors`` first, then bearer, stream_policy and credentials, as
    in examples/cloud_streams.toml; yields its origin."""
    proxy = StreamProxy(
        upstream=upstream + SERVICE_PREFIX,
        path="/v1/stream",
        chain=[
            # max_age 0: no preflight cache, so each request of the page is preflighted anew
            Cors(
                allow_origins=[page_origin],
                allow_credentials=True,
                expose_headers=EXPOSED,
                max_age=0,
            ),
            BearerAuth(tokens=[StaticToken(token=ALICE, sub="alice", claims={"org_id": "acme"})]),
            StreamPolicy(rules=[StreamRule(paths=["chats/{sub}/**"], allow=ALL_ACTIONS)]),
            Credentials(bearer=SERVICE_SECRET),
        ],
    )
    app = web.Application(middlewares=[recording_middleware(exchanges)])
    proxy.setup(app)
    async with serve_app(app) as origin:
        yield origin


async def page_fetch(
    browser: NodeProcess, url: str, method: str, *, body: str | None = None, **headers: str
) -> dict[str, Any]:
    await browser.send(
        cmd="fetch",
        url=url,
        method=method,
        headers={"Authorization": f"Bearer {ALICE}", **headers},
        body=body,
        read=[name.lower() for name in EXPOSED] + ["content-type"],
    )
    return await browser.event("fetched")


def listed(header: str | None) -> set[str]:
    return {item.strip().upper() for item in (header or "").split(",") if item.strip()}


async def test_page_creates_appends_reads_and_deletes_a_stream_cross_origin(
    tmp_path: Path,
) -> None:
    node = require_prerequisites(browser=True)
    exchanges: list[Exchange] = []
    async with (
        reference_streams_server(
            tmp_path / "reference-server.log",
            service_prefix=SERVICE_PREFIX + "/",
            service_secret=SERVICE_SECRET,
        ) as upstream,
        serve_app(page_site()) as page_origin,
        streams_proxy(upstream, page_origin, exchanges) as proxy_origin,
        node_process(node, "fetch_driver.mjs", {"E2E_PAGE_URL": page_origin + "/"}) as browser,
    ):
        assert page_origin != proxy_origin
        loaded = await browser.event("loaded", within=30)
        assert loaded["status"] == 200
        url = f"{proxy_origin}/v1/stream/{STREAM}"

        created = await page_fetch(browser, url, "PUT", **{"Content-Type": "text/plain"})
        appended = await page_fetch(
            browser, url, "POST", body=MESSAGE, **{"Content-Type": "text/plain"}
        )
        read = await page_fetch(browser, url + "?offset=-1", "GET")
        deleted = await page_fetch(browser, url, "DELETE")
        gone = await page_fetch(browser, url + "?offset=-1", "GET")
        await browser.send(cmd="finish")
        done = await browser.event("done")
        assert await browser.close() == 0

    results = {"PUT": created, "POST": appended, "GET": read, "DELETE": deleted, "GET gone": gone}
    failed = {step: r["error"] for step, r in results.items() if not r["ok"]}
    assert not failed, f"fetch threw in the page: {failed}\nconsole: {done['console']}"
    assert created["status"] == 201, created
    assert created["headers"]["location"] == url  # the service prefix is not shown
    assert appended["status"] in (200, 204), appended
    assert appended["headers"]["stream-next-offset"], appended
    assert read["status"] == 200, read
    assert read["body"] == MESSAGE
    assert read["headers"]["content-type"].startswith("text/plain")
    assert read["headers"]["stream-next-offset"] == appended["headers"]["stream-next-offset"]
    assert deleted["status"] == 204, deleted
    assert gone["status"] == 404, gone
    assert not [m for m in done["console"] if m["type"] == "error" and "404" not in m["text"]]

    # Each method the page used was preflighted (Authorization makes them all non-simple),
    # and the proxy's preflight allowed exactly that method for the page's origin.
    preflights = [e for e in exchanges if e.method == "OPTIONS"]
    asked = [e.request_headers["Access-Control-Request-Method"] for e in preflights]
    assert sorted(asked) == ["DELETE", "GET", "GET", "POST", "PUT"], asked
    for exchange in preflights:
        method = exchange.request_headers["Access-Control-Request-Method"]
        assert exchange.status == 204, exchange
        assert exchange.headers["Access-Control-Allow-Origin"] == page_origin
        assert exchange.headers["Access-Control-Allow-Credentials"] == "true"
        assert method in listed(exchange.headers["Access-Control-Allow-Methods"])
    # Chromium saw the same answers.
    raw = [r for r in done["responses"] if r["url"].startswith(proxy_origin)]
    answered = sorted(r["method"] for r in raw if r["method"] != "OPTIONS")
    assert answered == ["DELETE", "GET", "GET", "POST", "PUT"], raw
    assert all(r["allowOrigin"] == page_origin for r in raw), raw
