"""Mount electric-proxy inside an existing aiohttp app, with the chain built in code.

Run it in front of a real Electric:

    ELECTRIC_URL=http://localhost:3000/v1/shape ELECTRIC_SECRET=... \
        python examples/embed_in_aiohttp_app.py

The app's own routes are untouched; the chain runs only on /api/shape. /healthz and /readyz
report on the proxy, and the access log never shows a client's filters or secrets.
"""

from __future__ import annotations

import os

from aiohttp import web

from electric_proxy import (
    AccessLogger,
    BearerAuth,
    Credentials,
    Health,
    Principal,
    ShapePolicy,
    ShapeProxy,
)

SESSIONS = web.AppKey("sessions", dict)


async def from_session_cookie(request: web.Request) -> Principal | None:
    """Reuse the app's own login: a session cookie mapped to a user and their org."""
    session = request.app[SESSIONS].get(request.cookies.get("session", ""))
    return Principal(session["user"], {"org_id": session["org"]}) if session else None


async def index(request: web.Request) -> web.Response:
    return web.Response(text="my app")


def make_app(electric_url: str, electric_secret: str) -> web.Application:
    app = web.Application()
    app[SESSIONS] = {"s-alice": {"user": "alice", "org": "acme"}}
    app.router.add_get("/", index)

    proxy = ShapeProxy(
        upstream=electric_url,
        path="/api/shape",
        chain=[
            BearerAuth(callback=from_session_cookie),
            ShapePolicy(shapes={"todos": {"where": "org_id = :org_id"}}),
            Credentials(secret=electric_secret),
        ],
    )
    proxy.setup(app)
    Health([proxy]).setup(app)
    return app


if __name__ == "__main__":
    web.run_app(
        make_app(os.environ["ELECTRIC_URL"], os.environ["ELECTRIC_SECRET"]),
        handler_cancellation=True,  # a client that leaves cancels its upstream request
        access_log_class=AccessLogger,
    )
