"""The example page (examples/browser/) in headless Chromium, on another origin than the proxy.

The page loads the real ``@electric-sql/client`` as an ES module (no bundler, no CDN) and
lists the user's todos live. ``browser_driver.mjs`` drives it with playwright-core and
Debian's Chromium; this side serves the page, runs the proxy (CORS first in the chain) in
front of the fake Electric, changes rows, and checks what went over the wire: preflights
answered by the proxy, credentials allowed for the page's origin only, the ``electric-*``
headers exposed to script, gzip bodies decoded by the browser. A screenshot is saved under
test-artifacts/.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from e2e_support import (
    ARTIFACTS,
    NODE_MODULES,
    ROOT,
    ClientFailed,
    DropResponseHeader,
    NodeProcess,
    Stack,
    node_process,
    require_prerequisites,
    running_stack,
    standard_chain,
)

from electric_proxy import Cors
from electric_proxy.testing import ALICE, serve_app

pytestmark = pytest.mark.timeout(90)

TENANT = "acme"
OTHER = "globex"
EXAMPLE = ROOT / "examples" / "browser"
VENDOR_PREFIX = "vendor/electric-sql-client/"
VENDOR = NODE_MODULES / "@electric-sql" / "client" / "dist"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
}
EXTRA_ROWS = [
    *({"id": i, "org_id": TENANT, "title": f"acme task {i}", "done": False} for i in (5, 6, 7)),
    *({"id": i, "org_id": OTHER, "title": f"globex task {i}", "done": True} for i in (10, 11)),
]
CLIENT_HEADERS = {
    "electric-cursor",
    "electric-handle",
    "electric-offset",
    "electric-schema",
    "electric-up-to-date",
}


def static_site(served: list[str]) -> web.Application:
    """examples/browser/ at /, and the client's dist/ at /vendor/electric-sql-client/."""

    async def handle(request: web.Request) -> web.StreamResponse:
        served.append(request.path)
        path = request.match_info["path"] or "index.html"
        root, relative = (
            (VENDOR, path.removeprefix(VENDOR_PREFIX))
            if path.startswith(VENDOR_PREFIX)
            else (EXAMPLE, path)
        )
        target = (root / relative).resolve()
        if (
            not target.is_relative_to(root.resolve())
            or not target.is_file()
            or target.suffix not in CONTENT_TYPES
        ):
            raise web.HTTPNotFound()
        return web.FileResponse(
            target,
            headers={"Content-Type": CONTENT_TYPES[target.suffix], "Cache-Control": "no-store"},
        )

    app = web.Application()
    app.router.add_get("/{path:.*}", handle)
    return app


def browser_env(stack: Stack, page_origin: str) -> dict[str, str]:
    query = urlencode({"proxy": stack.shape_url, "token": ALICE})
    return {
        "E2E_PAGE_URL": f"{page_origin}/index.html?{query}",
        "E2E_TENANT": TENANT,
        "E2E_STEP_TIMEOUT_MS": "10000",
    }


def listed(header: str | None) -> set[str]:
    return {item.strip().lower() for item in (header or "").split(",") if item.strip()}


async def show_initial_then_live(stack: Stack, browser: NodeProcess) -> None:
    """The page lists acme's rows, then a row inserted upstream appears live (globex's,
    committed first, never does: the driver fails on any row of another tenant)."""
    db = stack.db
    await browser.event("loaded", within=30)
    await browser.send(cmd="wait", step="initial", rows=db.visible(TENANT))
    await browser.event("reached")

    await stack.electric.wait_until(lambda: stack.electric.held >= 1, within=10)
    db.insert({"id": 301, "org_id": OTHER, "title": "globex secret plan", "done": False})
    db.insert({"id": 300, "org_id": TENANT, "title": "appears live", "done": False})
    await browser.send(cmd="wait", step="live insert", rows=db.visible(TENANT))
    await browser.event("reached")

    await stack.electric.wait_until(lambda: stack.electric.held >= 1, within=10)
    db.update({"id": 1, "done": True})
    db.delete(5)
    await browser.send(cmd="wait", step="live update", rows=db.visible(TENANT))
    await browser.event("reached")


async def test_page_on_another_origin_shows_the_users_rows_live() -> None:
    node = require_prerequisites(browser=True)
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "browser-e2e.png"
    screenshot.unlink(missing_ok=True)
    served: list[str] = []
    async with serve_app(static_site(served)) as page_origin:
        chain = standard_chain(front=[Cors(allow_origins=[page_origin], allow_credentials=True)])
        async with running_stack(chain=chain, extra_rows=EXTRA_ROWS) as stack:
            assert stack.proxy_origin != page_origin
            async with node_process(
                node, "browser_driver.mjs", browser_env(stack, page_origin)
            ) as browser:
                await show_initial_then_live(stack, browser)
                await browser.send(cmd="probe", url=stack.shape_url, token=ALICE)
                probed = await browser.event("probed")
                await browser.send(cmd="screenshot", path=str(screenshot))
                await browser.event("screenshot")
                await browser.send(cmd="finish")
                done = await browser.event("done")
                assert await browser.close() == 0

    # The page loaded the client from its own origin, as an ES module (no bundler, no CDN).
    assert "/vendor/electric-sql-client/index.mjs" in served
    assert all(
        r["url"].startswith((page_origin + "/", stack.proxy_origin + "/")) for r in done["requests"]
    ), done["requests"]
    assert done["state"]["status"] == "live"
    assert {row["org_id"] for row in done["state"]["rows"]} == {TENANT}

    # Preflights (Authorization makes every shape request non-simple) reached the proxy and
    # were answered for the page's origin, with credentials, before authentication.
    preflights = stack.shape_exchanges("OPTIONS")
    assert preflights, "the browser sent no preflight to the proxy"
    for exchange in preflights:
        assert exchange.request_headers["Origin"] == page_origin
        assert "authorization" in listed(
            exchange.request_headers.get("Access-Control-Request-Headers")
        )
        assert exchange.status == 204
        assert exchange.headers["Access-Control-Allow-Origin"] == page_origin
        assert exchange.headers["Access-Control-Allow-Credentials"] == "true"
        assert "authorization" in listed(exchange.headers["Access-Control-Allow-Headers"])
        assert "origin" in listed(exchange.headers.get("Vary"))

    # Every shape response: the page's origin with credentials, the electric-* headers the
    # client reads exposed by name, Vary: Origin; gzip passed through for the browser.
    gets = stack.shape_exchanges("GET")
    browser_gets = [e for e in gets if e.request_headers.get("Origin") == page_origin]
    assert len(browser_gets) == len(gets) >= 4
    for exchange in gets:
        assert exchange.status == 200, exchange.path_qs
        assert exchange.headers["Access-Control-Allow-Origin"] == page_origin
        assert exchange.headers["Access-Control-Allow-Credentials"] == "true"
        assert listed(exchange.headers["Access-Control-Expose-Headers"]) >= CLIENT_HEADERS
        assert "origin" in listed(exchange.headers.get("Vary"))
        assert "gzip" in exchange.request_headers.get("Accept-Encoding", "")
    assert any(e.headers.get("Content-Encoding") == "gzip" for e in gets)
    # ... and Chromium received gzip bodies on the shape endpoint and decoded them (the rows
    # it rendered came in them).
    proxied: list[dict[str, Any]] = [
        r for r in done["responses"] if r["url"].startswith(stack.shape_url)
    ]
    assert any(r["contentEncoding"] == "gzip" and r["method"] == "GET" for r in proxied)

    # What page script itself can read of a cross-origin response with credentials: the
    # exposed electric-* headers, and nothing that was not exposed.
    assert probed["status"] == 200
    exposed = probed["headers"]
    assert exposed["electric-handle"] and exposed["electric-offset"] and exposed["electric-schema"]
    assert exposed["electric-server"] is None
    assert probed["orgs"] == [TENANT]

    data = await asyncio.to_thread(screenshot.read_bytes)
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


async def test_page_reports_a_proxy_that_breaks_the_protocol() -> None:
    """With ``electric-cursor`` dropped, the page must show its error instead of going
    live: the test above would catch such a proxy."""
    node = require_prerequisites(browser=True)
    served: list[str] = []
    async with serve_app(static_site(served)) as page_origin:
        chain = standard_chain(
            front=[
                Cors(allow_origins=[page_origin], allow_credentials=True),
                DropResponseHeader("electric-cursor"),
            ]
        )
        async with (
            running_stack(chain=chain, extra_rows=EXTRA_ROWS) as stack,
            node_process(node, "browser_driver.mjs", browser_env(stack, page_origin)) as browser,
        ):
            with pytest.raises(ClientFailed) as failure:
                await show_initial_then_live(stack, browser)

    event = failure.value.event
    assert event is not None and event["event"] == "failed", failure.value
    assert failure.value.returncode == 1
    assert event["reason"] == "the page shows an error"
    assert "electric-cursor" in event["status"], event["status"]
