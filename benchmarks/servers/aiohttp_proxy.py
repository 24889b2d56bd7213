"""A minimal aiohttp pass-through proxy: the floor any aiohttp-based proxy is measured against.

It does only what every aiohttp proxy has to do (one pooled ``ClientSession``, copy the
query, stream the body with ``iter_any``) and nothing a secure proxy adds: no auth, no
policy, no secret, no header allow-list. Its session keeps aiohttp's defaults, including
the connector limit of 100 connections, which is exactly the "naive" proxy of the long-poll
comparison: under a burst of live requests the 101st waits in the pool for a held one.
Upstream ``Content-Encoding``/``Content-Length`` are dropped as Electric's docs tell proxies
to do (the default session decompresses).
"""

from __future__ import annotations

import argparse
import resource
from collections.abc import AsyncIterator

import aiohttp
import uvloop
from aiohttp import web
from yarl import URL

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)
LIMIT = web.AppKey("limit", int)
DROPPED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length"}
)


async def session_ctx(app: web.Application) -> AsyncIterator[None]:
    # aiohttp's defaults (limit=100, total timeout 300 s) unless --limit says otherwise.
    app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=app[LIMIT]))
    yield
    await app[SESSION].close()


async def handle(request: web.Request) -> web.StreamResponse:
    url = URL(request.app[UPSTREAM] + "?" + request.query_string, encoded=True)
    async with request.app[SESSION].get(url) as upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in DROPPED:
                response.headers.add(name, value)
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's /v1/shape URL")
    parser.add_argument("--backlog", type=int, default=128)
    parser.add_argument("--limit", type=int, default=100, help="connector limit (aiohttp's 100)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    app = web.Application()
    app[UPSTREAM] = args.upstream
    app[LIMIT] = args.limit
    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/v1/shape", handle)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        backlog=args.backlog,
        handler_cancellation=True,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop() if args.uvloop else None,
    )


if __name__ == "__main__":
    main()
