"""One replica of an app that embeds the proxy, for ``test_node_revocation_replicas.py``.

What an application runs several times behind a load balancer: an aiohttp app whose
``ShapeProxy`` authenticates users from the app's own session store, shared by every replica
(here Redis itself: a hash ``session:<token>`` holding ``sub`` and the other claims), and
whose ``Revocations`` share interrupts through Redis pub/sub, with the admin endpoint on a
listener of its own. ``GET /replica/state`` tells the test whether this replica is
subscribed yet and what it counted.

    python replica_app.py --port P --admin-port A --upstream URL --redis-url URL

The upstream's secret and the admin token come from ``E2E_UPSTREAM_SECRET`` and
``E2E_ADMIN_TOKEN``. It prints ``{"event": "ready"}`` once it serves, and
stops when its stdin is closed (so it never outlives the test) or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis

from electric_proxy import (
    BearerAuth,
    Credentials,
    Principal,
    Revocations,
    ShapePolicy,
    ShapeProxy,
    bearer_token,
)

COLUMNS = ["id", "org_id", "title", "done"]


class Sessions:
    """``BearerAuth``'s callback: the token's session, read from Redis on every request."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.redis: Redis | None = None

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        self.redis = Redis.from_url(self.redis_url, decode_responses=True)
        try:
            yield
        finally:
            await self.redis.aclose()

    async def __call__(self, request: web.Request) -> Principal | None:
        token = bearer_token(request)
        if token is None:
            return None
        assert self.redis is not None
        stored = await self.redis.hgetall(f"session:{token}")  # str: decode_responses
        session = {str(field): str(value) for field, value in stored.items()}
        if "sub" not in session:
            return None
        return Principal(session["sub"], session)


def build_app(args: argparse.Namespace) -> web.Application:
    sessions = Sessions(args.redis_url)
    shapes = ShapeProxy(
        upstream=args.upstream,
        chain=[
            BearerAuth(callback=sessions),
            ShapePolicy(shapes={"todos": {"where": "org_id = :org_id", "columns": COLUMNS}}),
            Credentials(secret=os.environ["E2E_UPSTREAM_SECRET"]),
        ],
    )
    revocations = Revocations([shapes], redis_url=args.redis_url)
    app = web.Application()
    app.cleanup_ctx.append(sessions.cleanup_ctx)
    shapes.setup(app)
    revocations.setup(app)
    app.cleanup_ctx.append(
        revocations.admin_listener("127.0.0.1", args.admin_port, os.environ["E2E_ADMIN_TOKEN"])
    )

    async def state(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "subscribed": revocations.subscribed,
                "received": revocations.received,
                "interrupted": shapes.inflight.interrupted,
                "held": sum(shapes.inflight.held.values()),
            }
        )

    app.router.add_get("/replica/state", state)
    return app


async def stop_when_stdin_closes(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(1 << 12):
        pass
    stop.set()


async def serve(args: argparse.Namespace) -> None:
    runner = web.AppRunner(
        build_app(args), handler_cancellation=True, access_log=None, shutdown_timeout=5
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        print(json.dumps({"event": "ready"}), flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        watcher = asyncio.create_task(stop_when_stdin_closes(stop))
        await stop.wait()
        watcher.cancel()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="Electric's /v1/shape URL")
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
