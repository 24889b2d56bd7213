"""aiohttp answering from memory: the ceiling of any proxy built on aiohttp's server.

No upstream, no client, no work: each request gets the body file its ``handle`` names
(read once at start-up) with Electric's headers, through aiohttp's server on the same
event loop as the proxies. A shape-cache hit still parses a request and writes a response
through this same server, so it can approach this row but never pass it; the row shows how
much of a target is left to the proxy at all.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aiohttp import web

BODIES = web.AppKey("bodies", dict[str, bytes])
HEADERS = web.AppKey("headers", dict[str, str])


async def handle(request: web.Request) -> web.Response:
    handle = request.query.get("handle", "bench-1kb")
    body = request.app[BODIES][handle]
    return web.Response(body=body, headers={**request.app[HEADERS], "electric-handle": handle})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--www", type=Path, required=True, help="holds body-<size>.json")
    parser.add_argument("--headers", required=True, help="Electric's headers, a JSON object")
    parser.add_argument("--backlog", type=int, default=128)
    args = parser.parse_args()
    app = web.Application()
    app[BODIES] = {
        "bench-" + path.stem.removeprefix("body-"): path.read_bytes()
        for path in args.www.glob("body-*.json")
    }
    app[HEADERS] = {"Content-Type": "application/json", **json.loads(args.headers)}
    app.router.add_get("/v1/shape", handle)
    web.run_app(
        app, host="127.0.0.1", port=args.port, backlog=args.backlog, access_log=None, print=None
    )


if __name__ == "__main__":
    main()
