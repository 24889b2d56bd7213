"""A long-poll upstream that answers like Electric, holds live requests, and keeps count.

Static nginx cannot hold a request, so the live-request benchmarks use this small aiohttp
server (its own process). For ``GET /v1/shape?live=true``:

* when the client's ``offset`` is behind the current version, it answers at once with one
  change (Electric does the same when data is waiting);
* otherwise it holds the request until ``POST /_bench/change`` or ``--hold`` seconds pass,
  then answers like an Electric long-poll timeout: ``electric-has-data: false`` and
  ``[{"headers":{"control":"up-to-date","global_last_seen_lsn":"…"}}]``.

Every answer carries the headers Electric's client requires on live responses
(``electric-handle``, ``electric-offset``, ``electric-cursor``, ``electric-up-to-date``,
``electric-has-data``), Electric's live ``cache-control`` and its CORS headers.

Measurements: it counts the shape requests it received (coalescing shows up as fewer of
them) and the most it held at once; a ``cursor`` holding wall-clock microseconds (the
benchmark client's send time; proxies pass ``cursor`` through untouched) gives the delay
between the client sending and the upstream receiving, on the one clock all processes here
share. ``GET /_bench/stats`` reports them; ``POST /_bench/reset[?hold=S]`` clears them.

The cyclic garbage collector is off while requests arrive and runs at each reset instead:
this process stands in for Electric (which pays no Python GC), and with 9,000 requests held
the collections it would trigger during a burst doubled the time the upstream took to
take them in, delay the benchmark would otherwise charge to the proxy in front of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import resource
import time

from aiohttp import web

UP_TO_DATE = '[{"headers":{"control":"up-to-date","global_last_seen_lsn":"%d"}}]'
CHANGE = (
    '[{"key":"\\"public\\".\\"todos\\"/\\"%d\\"","value":{"id":"%d","title":"todo %d",'
    '"done":"false","org_id":"acme"},"headers":{"operation":"insert","relation":["public",'
    '"todos"],"lsn":"%d","op_position":0,"txids":[%d],"last":true}},'
    '{"headers":{"control":"up-to-date","global_last_seen_lsn":"%d"}}]'
)
# Wall-clock microseconds since the epoch are above this; Electric's own cursors are small.
STAMP_FLOOR = 10**15


class State:
    """What the upstream serves (a version bumped per change) and what it has seen."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.version = 0
        self.changed = asyncio.Event()
        self.reset()

    def reset(self) -> None:
        self.shape_requests = 0
        self.answered = 0
        self.held = 0
        self.peak_held = 0
        self.delays: list[float] = []
        self.first_received: float | None = None
        self.last_received: float | None = None

    def change(self) -> None:
        self.version += 1
        woken, self.changed = self.changed, asyncio.Event()
        woken.set()


STATE = web.AppKey("state", State)


def _offset_version(offset: str) -> int:
    head = offset.partition("_")[0]
    return int(head) if head.lstrip("-").isdigit() else -1


def _headers(handle: str, offset: str, version: int, has_data: bool) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "cache-control": "public, max-age=5, stale-while-revalidate=5",
        "electric-handle": handle,
        "electric-offset": f"{version}_0",
        "electric-cursor": str(1000 + version),
        "electric-up-to-date": "",
        "electric-has-data": "true" if has_data else "false",
        "etag": f'"{handle}:{offset}:{version}_0:{time.monotonic_ns()}"',
        "access-control-allow-origin": "*",
        "access-control-expose-headers": "electric-cursor,electric-handle,electric-has-data,"
        "electric-offset,electric-schema,electric-up-to-date,electric-internal-known-error,"
        "retry-after",
        "access-control-allow-methods": "GET, POST, HEAD, DELETE, OPTIONS",
    }


async def shape(request: web.Request) -> web.Response:
    received = time.time()
    state = request.app[STATE]
    state.shape_requests += 1
    if state.first_received is None:
        state.first_received = received
    state.last_received = received
    query = request.query
    cursor = query.get("cursor", "")
    if cursor.isdigit() and int(cursor) > STAMP_FLOOR:
        state.delays.append(received - int(cursor) / 1e6)
    handle = query.get("handle", "bench-handle")
    offset = query.get("offset", "-1")
    if query.get("live") == "true" and _offset_version(offset) >= state.version:
        state.held += 1
        state.peak_held = max(state.peak_held, state.held)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.changed.wait(), state.hold)
        finally:
            state.held -= 1
    version = state.version
    has_data = _offset_version(offset) < version
    body = CHANGE % ((version,) * 6) if has_data else UP_TO_DATE % version
    state.answered += 1
    return web.Response(text=body, headers=_headers(handle, offset, version, has_data))


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {
            "shape_requests": state.shape_requests,
            "answered": state.answered,
            "held": state.held,
            "peak_held": state.peak_held,
            "version": state.version,
            "delays": state.delays,
            "first_received": state.first_received,
            "last_received": state.last_received,
        },
        dumps=json.dumps,
    )


async def reset(request: web.Request) -> web.Response:
    """Clear the counters; ``?hold=S`` also changes how long live requests are held."""
    state = request.app[STATE]
    state.reset()
    gc.collect()
    if "hold" in request.query:
        state.hold = float(request.query["hold"])
    return web.Response(text="ok")


async def change(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.change()
    return web.json_response({"version": state.version, "woken": state.held})


async def on_startup(app: web.Application) -> None:
    app[STATE] = State(app[HOLD])


HOLD = web.AppKey("hold", float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hold", type=float, default=5.0, help="seconds a live request waits")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    app = web.Application()
    app[HOLD] = args.hold
    app.on_startup.append(on_startup)
    app.router.add_get("/v1/shape", shape)
    app.router.add_get("/_bench/stats", stats)
    app.router.add_post("/_bench/reset", reset)
    app.router.add_post("/_bench/change", change)
    gc.disable()
    # Test infrastructure must not be the bottleneck of a burst: a deep accept queue.
    web.run_app(app, host="127.0.0.1", port=args.port, backlog=8192, access_log=None, print=None)


if __name__ == "__main__":
    main()
