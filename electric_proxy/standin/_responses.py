"""Writing shape API responses: Electric's headers and bodies, streamed as Bandit streams them.

Caches and clients key on these exact headers, so the cache-control matrix, ETags, cursors and
CORS follow Electric's rules (§5, §6). Bodies are chunked (gzip or deflate when the client
accepts it) and written in batches, and a client that disconnects mid-response is reported
once and never written to again, which is what lets tests count cancellations.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final, Protocol

from aiohttp import web
from multidict import CIMultiDict

from ._protocol import BEFORE_ALL, Offset, format_offset
from ._requests import _ShapeRequest
from ._shapes import _Shape

EXPOSED_HEADERS: Final = (
    "electric-cursor,electric-handle,electric-has-data,electric-offset,electric-schema,"
    "electric-up-to-date,electric-internal-known-error,retry-after"
)
SHAPE_METHODS: Final = "GET, POST, HEAD, DELETE, OPTIONS"
INITIAL_CACHE: Final = "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746"
LIVE_CACHE: Final = "public, max-age=5, stale-while-revalidate=5"
CATCH_UP_CACHE: Final = "public, max-age=60, stale-while-revalidate=300"
REDIRECT_CACHE: Final = "public, max-age=60, must-revalidate"
JSON_BATCH: Final = 500
CURSOR_EPOCH: Final = datetime(2024, 10, 9, tzinfo=UTC).timestamp()
_CLIENT_GONE: Final = web.RequestKey("electric_client_gone", bool)


class _Settings(Protocol):
    """`FakeElectric`'s public knobs, read when each response is written so changes apply."""

    long_poll_timeout: float
    sse_timeout: float
    sse_keepalive: float
    chunk_rows: int
    compress: bool


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _if_none_match(request: web.BaseRequest) -> set[str]:
    tags: set[str] = set()
    for header in request.headers.getall("If-None-Match", []):
        tags.update(part.strip().strip('"') for part in header.split(","))
    return tags


def _up_to_date_message(lsn: int) -> dict[str, object]:
    return {"headers": {"control": "up-to-date", "global_last_seen_lsn": str(lsn)}}


def _cors(request: web.BaseRequest, methods: str = SHAPE_METHODS) -> CIMultiDict[str]:
    return CIMultiDict(
        {
            "access-control-allow-origin": request.headers.get("Origin", "*"),
            "access-control-expose-headers": EXPOSED_HEADERS,
            "access-control-allow-methods": methods,
        }
    )


def _json(
    request: web.BaseRequest,
    status: int,
    body: object,
    *,
    cache: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A small JSON response carrying the cache headers Electric would give it (§5)."""
    merged = _cors(request)
    merged["content-type"] = "application/json"
    if cache is not None:
        merged["cache-control"] = cache
    elif request.method not in ("GET", "HEAD", "OPTIONS"):
        merged["cache-control"] = "no-cache"
    elif status >= 400:
        merged["cache-control"] = "no-store"
        merged["surrogate-control"] = "no-store"
    merged.update(headers or {})
    return web.Response(status=status, body=_dumps(body), headers=merged)


def _invalid(request: web.BaseRequest, errors: Mapping[str, object]) -> web.Response:
    return _json(request, 400, {"message": "Invalid request", "errors": errors})


def _must_refetch(request: web.BaseRequest, handle: str) -> web.Response:
    cache = "no-cache" if request.method not in ("GET", "HEAD") else REDIRECT_CACHE
    return _json(
        request,
        409,
        [{"headers": {"control": "must-refetch"}}],
        cache=cache,
        headers={"electric-handle": handle},
    )


def _up_to_date(req: _ShapeRequest, shape: _Shape, end: Offset) -> bool:
    """`determine_up_to_date/1`: never on `offset=-1`, else when the chunk reaches the end."""
    return req.offset != BEFORE_ALL and end >= max(shape.last_offset, req.offset)


def _etag(shape: _Shape, req: _ShapeRequest, end: Offset, *, no_changes: bool) -> str:
    tag = f"{shape.handle}:{req.offset_text}:{format_offset(end)}"
    if no_changes:
        tag += f":{time.monotonic_ns()}"
    return f'"{tag}"'


def _cursor(long_poll_timeout: float, client_cursor: str | None) -> str:
    """`get_next_interval_timestamp/2`: a moving per-interval cache key for live requests."""
    interval = int(long_poll_timeout)
    if interval <= 0:
        return "0"
    elapsed = time.time() - CURSOR_EPOCH
    next_interval = math.ceil(elapsed / interval) * interval
    try:
        previous = int(client_cursor) if client_cursor else None
    except ValueError:
        previous = None
    if previous is not None and next_interval <= previous:
        next_interval = previous + random.randint(1, 3600)
    return str(next_interval)


def _cache_control(request: web.BaseRequest, req: _ShapeRequest, sse_timeout: float) -> str:
    if request.method not in ("GET", "HEAD"):
        return "no-cache"
    if req.offset == BEFORE_ALL and not req.now:
        return INITIAL_CACHE
    if req.live and req.sse:
        return f"public, max-age={max(1, int(sse_timeout) - 1)}"
    return LIVE_CACHE if req.live else CATCH_UP_CACHE


class _Responder:
    """Writes log responses for one server; `on_gone` hears once of each client that left."""

    def __init__(self, settings: _Settings, on_gone: Callable[[], None]) -> None:
        self._settings = settings
        self._on_gone = on_gone

    def gone(self, request: web.BaseRequest) -> None:
        """Mark the client gone (cancelled or failing writes); nothing more is written to it."""
        if not request.get(_CLIENT_GONE):
            request[_CLIENT_GONE] = True
            self._on_gone()

    def log_headers(
        self,
        request: web.BaseRequest,
        req: _ShapeRequest,
        shape: _Shape,
        end: Offset,
        *,
        up_to_date: bool,
        has_data: bool,
        etag: str | None = None,
        no_changes: bool = False,
    ) -> CIMultiDict[str]:
        headers = _cors(request)
        headers["content-type"] = "text/event-stream" if req.sse else "application/json"
        headers["cache-control"] = _cache_control(request, req, self._settings.sse_timeout)
        if req.live:
            headers["electric-cursor"] = _cursor(self._settings.long_poll_timeout, req.cursor)
        headers["etag"] = etag or _etag(shape, req, end, no_changes=no_changes)
        headers["electric-handle"] = shape.handle
        if not req.live:
            headers["electric-schema"] = shape.table.schema_header(shape.selected)
        if up_to_date:
            headers["electric-up-to-date"] = ""
        headers["electric-offset"] = format_offset(end)
        headers["electric-has-data"] = "true" if has_data else "false"
        return headers

    def _coding(self, request: web.BaseRequest) -> web.ContentCoding | None:
        """Bandit's negotiation: the first of deflate/gzip the client lists (q=0 refuses)."""
        if not self._settings.compress:
            return None
        for token in request.headers.get("Accept-Encoding", "").split(","):
            name, _, rest = token.strip().partition(";")
            if rest.replace(" ", "").lower() in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
                continue
            coding = name.strip().lower()
            if coding in ("gzip", "x-gzip"):
                return web.ContentCoding.gzip
            if coding == "deflate":
                return web.ContentCoding.deflate
        return None

    async def prepare(self, request: web.BaseRequest, resp: web.StreamResponse) -> bool:
        """False when the client left while a held request was being answered."""
        try:
            await resp.prepare(request)
        except ConnectionResetError:
            self.gone(request)
            return False
        return True

    async def write(self, request: web.BaseRequest, resp: web.StreamResponse, data: bytes) -> bool:
        if request.get(_CLIENT_GONE):
            return False
        try:
            await resp.write(data)
        except ConnectionResetError:
            self.gone(request)
            return False
        return True

    async def finish(self, request: web.BaseRequest, resp: web.StreamResponse) -> None:
        if not request.get(_CLIENT_GONE):
            try:
                await resp.write_eof()
            except ConnectionResetError:
                self.gone(request)

    async def send_json(
        self,
        request: web.Request,
        headers: CIMultiDict[str],
        items: Sequence[object],
        *,
        head: bytes = b"[",
        tail: bytes = b"]",
    ) -> web.StreamResponse:
        """Stream a JSON array in batches, compressed when the client accepts it."""
        resp = web.StreamResponse(status=200, headers=headers)
        if request.method == "HEAD":
            if await self.prepare(request, resp):
                await self.finish(request, resp)
            return resp
        coding = self._coding(request)
        if coding is not None:
            resp.enable_compression(coding)
            resp.headers["vary"] = "accept-encoding"
        resp.enable_chunked_encoding()
        if not await self.prepare(request, resp) or not await self.write(request, resp, head):
            return resp
        for start in range(0, len(items), JSON_BATCH):
            batch = b",".join(_dumps(item) for item in items[start : start + JSON_BATCH])
            if not await self.write(request, resp, (b"," if start else b"") + batch):
                return resp
        if await self.write(request, resp, tail):
            await self.finish(request, resp)
        return resp

    async def open_events(
        self, request: web.Request, headers: CIMultiDict[str]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers=headers)
        if request.method != "HEAD":
            resp.enable_chunked_encoding()
        await self.prepare(request, resp)
        return resp

    async def send_events(
        self, request: web.Request, headers: CIMultiDict[str], items: Sequence[object]
    ) -> web.StreamResponse:
        """SSE framing for data that was ready at once: write it, then close the stream."""
        resp = await self.open_events(request, headers)
        if request.method != "HEAD":
            for item in items:
                if not await self.write_event(request, resp, item):
                    return resp
        await self.finish(request, resp)
        return resp

    async def write_event(
        self, request: web.BaseRequest, resp: web.StreamResponse, item: object
    ) -> bool:
        return await self.write(request, resp, b"data: " + _dumps(item) + b"\n\n")
