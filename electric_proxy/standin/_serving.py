"""Answering a validated `/v1/shape` request from its shape's log.

This is the client loop Electric serves (§2, §6, §7): the initial sync and catch-up read the
log a chunk at a time; a live request with nothing new is held, as a long-poll or an SSE
stream, until a change, a rotation or its timeout; `offset=now`, 304s, 409 must-refetch,
out-of-bounds offsets and subset snapshots answer as Electric answers them. Held requests are
reported to `on_held` so tests can wait for a client to be parked before changing data.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

from aiohttp import web

from ._database import _Database
from ._protocol import Offset, format_offset
from ._requests import _ShapeRequest, _Subset
from ._responses import (
    _cors,
    _dumps,
    _etag,
    _if_none_match,
    _invalid,
    _must_refetch,
    _Responder,
    _Settings,
    _up_to_date,
    _up_to_date_message,
)
from ._shapes import _Shape
from .where_eval import Row


class _ShapeServer:
    """Serves shape requests for one `FakeElectric` from its database."""

    def __init__(
        self,
        db: _Database,
        settings: _Settings,
        responder: _Responder,
        on_held: Callable[[int], None],
    ) -> None:
        self._db = db
        self._settings = settings
        self._responder = responder
        self._on_held = on_held

    async def serve(self, request: web.Request, req: _ShapeRequest) -> web.StreamResponse:
        shape = self._db.shape_for(
            req.definition, req.table, req.predicate, self._settings.chunk_rows
        )
        if req.handle is not None and req.handle != shape.handle:
            return _must_refetch(request, shape.handle)
        if req.subset is not None:
            return await self._serve_subset(request, req, shape, req.subset)
        if req.now:
            return await self._up_to_date_only(request, req, shape, no_changes=False)
        if req.offset > shape.last_offset:
            return await self._out_of_bounds(request, req, shape)
        messages, end = shape.read(req.offset)
        up_to_date = _up_to_date(req, shape, end)
        etag = _etag(shape, req, end, no_changes=False)
        if etag.strip('"') in _if_none_match(request):
            headers = self._responder.log_headers(
                request, req, shape, end, up_to_date=up_to_date, has_data=True, etag=etag
            )
            return web.Response(status=304, headers=headers)
        if req.live and not messages:
            if req.sse:
                return await self._stream_sse(request, req, shape, end, up_to_date)
            return await self._hold(request, req, shape)
        return await self._send_log(request, req, shape, messages, end)

    @contextlib.contextmanager
    def _holding(self) -> Iterator[None]:
        """Count the request as held for as long as the block runs, answer included."""
        self._on_held(+1)
        try:
            yield
        finally:
            self._on_held(-1)

    def _refetch(self, request: web.BaseRequest, shape: _Shape) -> web.Response:
        """The 409 for a rotated shape, pointing at the handle that replaced it."""
        return _must_refetch(request, self._db.current_handle(shape))

    async def _send_log(
        self,
        request: web.Request,
        req: _ShapeRequest,
        shape: _Shape,
        messages: list[dict[str, object]],
        end: Offset,
    ) -> web.StreamResponse:
        up_to_date = _up_to_date(req, shape, end)
        lsn = end[0] if req.live else max(self._db.lsn, end[0])
        items = messages + ([_up_to_date_message(lsn)] if up_to_date else [])
        headers = self._responder.log_headers(
            request, req, shape, end, up_to_date=up_to_date, has_data=True
        )
        if req.sse:
            return await self._responder.send_events(request, headers, items)
        return await self._responder.send_json(request, headers, items)

    async def _up_to_date_only(
        self, request: web.Request, req: _ShapeRequest, shape: _Shape, *, no_changes: bool
    ) -> web.StreamResponse:
        """Just the up-to-date control message: for `offset=now`, or a hold that timed out.

        A timed-out hold gets a unique ETag (`no_changes`), so it never revalidates (#2593).
        """
        headers = self._responder.log_headers(
            request,
            req,
            shape,
            shape.last_offset,
            up_to_date=True,
            has_data=False,
            no_changes=no_changes,
        )
        return await self._responder.send_json(
            request, headers, [_up_to_date_message(self._db.lsn)]
        )

    async def _hold(
        self, request: web.Request, req: _ShapeRequest, shape: _Shape
    ) -> web.StreamResponse:
        """A live long-poll: answer on the first change, rotation, or `long_poll_timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.long_poll_timeout
        with self._holding():
            while True:
                if shape.rotated:
                    return self._refetch(request, shape)
                messages, end = shape.read(req.offset)
                if messages:
                    return await self._send_log(request, req, shape, messages, end)
                remaining = deadline - loop.time()
                if remaining <= 0 or not await shape.signal.wait(remaining):
                    break
        return await self._up_to_date_only(request, req, shape, no_changes=True)

    async def _out_of_bounds(
        self, request: web.Request, req: _ShapeRequest, shape: _Shape
    ) -> web.StreamResponse:
        """An offset past the log end is held for half a long-poll, then refused (§2)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.long_poll_timeout / 2
        with self._holding():
            while not shape.rotated and req.offset > shape.last_offset:
                remaining = deadline - loop.time()
                if remaining <= 0 or not await shape.signal.wait(remaining):
                    break
        if shape.rotated:
            return self._refetch(request, shape)
        if req.offset > shape.last_offset:
            return _invalid(request, {"offset": ["out of bounds for this shape"]})
        messages, end = shape.read(req.offset)
        return await self._send_log(request, req, shape, messages, end)

    async def _stream_sse(
        self,
        request: web.Request,
        req: _ShapeRequest,
        shape: _Shape,
        end: Offset,
        up_to_date: bool,
    ) -> web.StreamResponse:
        """Live SSE: one `data:` event per message as changes commit, an up-to-date event after
        each batch, `: keep-alive` after `sse_keepalive` of silence, closed after `sse_timeout`
        (or silently on rotation, as Electric does)."""
        responder = self._responder
        headers = responder.log_headers(
            request, req, shape, end, up_to_date=up_to_date, has_data=True
        )
        resp = await responder.open_events(request, headers)
        if request.method == "HEAD":
            await responder.finish(request, resp)
            return resp
        loop = asyncio.get_running_loop()
        closes_at = loop.time() + self._settings.sse_timeout
        quiet_since = loop.time()
        since = req.offset
        with self._holding():
            while not shape.rotated:
                messages, chunk_end = shape.read(since)
                if messages:
                    if chunk_end >= shape.last_offset:
                        messages = [*messages, _up_to_date_message(chunk_end[0])]
                    for message in messages:
                        if not await responder.write_event(request, resp, message):
                            return resp
                    since, quiet_since = chunk_end, loop.time()
                    continue
                current = loop.time()
                if current >= closes_at:
                    break
                keepalive_at = quiet_since + self._settings.sse_keepalive
                if current >= keepalive_at:
                    if not await responder.write(request, resp, b": keep-alive\n\n"):
                        return resp
                    quiet_since = current
                    continue
                await shape.signal.wait(min(closes_at, keepalive_at) - current)
        await responder.finish(request, resp)
        return resp

    async def _serve_subset(
        self, request: web.Request, req: _ShapeRequest, shape: _Shape, subset: _Subset
    ) -> web.StreamResponse:
        """A subset snapshot (§7.2): current rows of the shape AND the subset where."""
        rows: list[Row] = [
            row
            for row in shape.table.rows.values()
            if shape.matches(row) and (subset.where is None or subset.where.matches(row))
        ]
        if subset.order is not None:
            rows = subset.order(rows)
        if subset.offset:
            rows = rows[subset.offset :]
        if subset.limit is not None:
            rows = rows[: subset.limit]
        mark = self._db.next_mark()
        data = []
        for row in rows:
            message = shape.row_message(row, "insert", shape.selected)
            headers_field = message["headers"]
            assert isinstance(headers_field, dict)
            headers_field["snapshot_mark"] = mark
            data.append(message)
        metadata = {
            "xmin": str(self._db.txid + 1),
            "xmax": str(self._db.txid + 1),
            "xip_list": [],
            "snapshot_mark": mark,
            "database_lsn": str(self._db.lsn),
        }
        headers = _cors(request)
        headers["content-type"] = "application/json"
        headers["cache-control"] = "no-cache"
        headers["electric-snapshot"] = "true"
        headers["electric-handle"] = shape.handle
        headers["electric-offset"] = format_offset(shape.last_offset)
        headers["electric-schema"] = shape.table.schema_header(shape.selected)
        return await self._responder.send_json(
            request,
            headers,
            data,
            head=b'{"metadata":' + _dumps(metadata) + b',"data":[',
            tail=b"]}",
        )
