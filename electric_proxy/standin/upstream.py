"""`FakeElectric`: an in-process stand-in for the Electric sync service's shape HTTP API.

The proxy is only as trustworthy as the upstream its tests run against. A stub that returns
canned JSON cannot show that the proxy keeps the real client loop working (initial sync in
chunks, catch-up, held live requests, SSE, 409 must-refetch) or that it blocks the real hazards
(Plug keeping the last of a repeated key, a POST body replacing the shape definition). So this
module reproduces Electric 1.7.x behaviour from the protocol brief
(`shared/reference/electric-sync-protocol.md` §1-§11, §16): request validation and its error
wording, offsets and chunking, headers and the cache-control matrix, ETags, cursors, CORS,
gzip, and where-clause filtering (`where_eval.py`) with shape-aware updates.

Everything runs on one event loop: the data methods (`insert`, `update`, `delete`, `rotate`)
must be called from the loop that serves the app, and they wake held requests immediately.

This module keeps `FakeElectric`, its routes and its public API; the machinery lives in private
modules beside it: `_protocol` (offsets, identifiers, how parameters decode), `_shapes` and
`_database` (tables, shape logs, transactions), `_requests` (validation), `_responses`
(headers and bodies) and `_serving` (the log, holds, SSE, subsets). The offset helpers and
header constants that used to be defined here are re-exported under their old names.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from ._database import _Database
from ._protocol import BEFORE_ALL as BEFORE_ALL
from ._protocol import OP_INF as OP_INF
from ._protocol import SUBSET_KEYS as SUBSET_KEYS
from ._protocol import Offset as Offset
from ._protocol import _collect_query, _merge_body
from ._protocol import format_offset as format_offset
from ._protocol import parse_offset as parse_offset
from ._requests import _Rejection, _RequestValidator
from ._responses import CATCH_UP_CACHE as CATCH_UP_CACHE
from ._responses import CURSOR_EPOCH as CURSOR_EPOCH
from ._responses import EXPOSED_HEADERS as EXPOSED_HEADERS
from ._responses import INITIAL_CACHE as INITIAL_CACHE
from ._responses import JSON_BATCH as JSON_BATCH
from ._responses import LIVE_CACHE as LIVE_CACHE
from ._responses import REDIRECT_CACHE as REDIRECT_CACHE
from ._responses import SHAPE_METHODS as SHAPE_METHODS
from ._responses import _cors, _invalid, _json, _Responder
from ._serving import _ShapeServer
from ._shapes import Column, _Signal

__all__ = ["Column", "FakeElectric", "RecordedRequest"]

SERVER_VERSION: Final = "ElectricSQL/1.7.12-fake"
OTHER_METHODS: Final = "GET, HEAD"
PREFLIGHT_HEADERS: Final = frozenset({"if-none-match", "traceparent"})
PLUG_DEFAULT_CACHE: Final = "max-age=0, private, must-revalidate"
HEALTH_CACHE: Final = "no-cache, no-store, must-revalidate"
MAX_BODY: Final = 8_000_000
_REQUEST_ID_OK: Final = re.compile(r"[\x21-\x7e]{20,200}")
_REQUEST_ID: Final = web.RequestKey("electric_request_id", str)
_BODY_TOO_LARGE: Final = web.RequestKey("electric_body_too_large", bool)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it, so tests can assert what the proxy sent upstream."""

    method: str
    path: str
    query_string: str
    query: MultiDictProxy[str]
    headers: CIMultiDictProxy[str]
    body: bytes


class FakeElectric:
    """Electric's `/v1/shape` HTTP API over in-memory tables.

    Counters for tests: `requests` (every request received, in order), `held` (requests
    currently waiting in a live long-poll or SSE stream) and `cancelled` (handlers that ended
    because the client went away: cancelled by aiohttp or failing to write). `wait_until`
    synchronises a test with those counters; `start`/`stop` serve it on a real port for the
    demo and for the TypeScript client, with handler cancellation on so disconnects count.
    """

    def __init__(
        self,
        *,
        secret: str | None = None,
        long_poll_timeout: float = 20.0,
        sse_timeout: float = 60.0,
        sse_keepalive: float = 21.0,
        chunk_rows: int = 500,
        compress: bool = True,
    ) -> None:
        self.secret = secret
        self.long_poll_timeout = long_poll_timeout
        self.sse_timeout = sse_timeout
        self.sse_keepalive = sse_keepalive
        self.chunk_rows = chunk_rows
        self.compress = compress
        self.requests: list[RecordedRequest] = []
        self.held = 0
        self.cancelled = 0
        self._runner: web.AppRunner | None = None
        self._activity = _Signal()
        self._db = _Database()
        self._validator = _RequestValidator(self._db.tables)
        self._responder = _Responder(self, self._count_cancelled)
        self._server = _ShapeServer(self._db, self, self._responder, self._held)

    # -- data ---------------------------------------------------------------------------------

    def add_table(
        self, name: str, columns: Sequence[Column], rows: Iterable[Mapping[str, object]] = ()
    ) -> None:
        """Create a table; `name` is `items` or `public.items`, taken literally (no case folding).

        Values may be Python objects or Postgres text; they are served as Postgres text output.
        """
        self._db.add_table(name, columns, rows)

    def insert(self, table: str, row: Mapping[str, object]) -> None:
        """Insert one row as its own transaction; missing columns are NULL."""
        self._db.insert(table, row)

    def update(self, table: str, row: Mapping[str, object]) -> None:
        """Update one row (primary key + changed columns) as its own transaction."""
        self._db.update(table, row)

    def delete(self, table: str, pk: Mapping[str, object]) -> None:
        """Delete one row by primary key as its own transaction."""
        self._db.delete(table, pk)

    def rotate(self, table: str) -> None:
        """Give every shape on `table` a new handle (as after invalidation); old ones get 409."""
        self._db.rotate(table, self.chunk_rows)

    async def wait_until(self, condition: Callable[[], bool], within: float = 5.0) -> None:
        """Return once `condition()` holds, e.g. `lambda: electric.held == 1`.

        Re-checked whenever a request arrives or is held, released or cancelled, so tests can
        synchronise with the server without sleeping; raises `TimeoutError` after `within` s.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("condition not reached on the fake Electric")
            await self._activity.wait(remaining)

    def _held(self, delta: int) -> None:
        self.held += delta
        self._activity.fire()

    def _count_cancelled(self) -> None:
        self.cancelled += 1
        self._activity.fire()

    def handles(self, table: str) -> list[str]:
        """Current handles of the shapes defined on `table`, oldest first."""
        return self._db.handles(table)

    # -- app ----------------------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application; serve it with handler cancellation on (as test servers do)."""
        app = web.Application(middlewares=[self._record], client_max_size=MAX_BODY + 1)
        app.router.add_get("/v1/shape", self._shape_endpoint)
        app.router.add_post("/v1/shape", self._shape_endpoint)
        app.router.add_delete("/v1/shape", self._delete_endpoint)
        app.router.add_route("OPTIONS", "/v1/shape", self._options_endpoint)
        app.router.add_get("/v1/health", self._health_endpoint)
        app.router.add_get("/", self._root_endpoint)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        app.on_response_prepare.append(self._stamp)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on a real socket (for the demo and end-to-end tests); returns the base URL."""
        runner = web.AppRunner(self.app(), handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runner = runner
        bound = runner.addresses[0]
        return f"http://{host}:{bound[1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            body = await request.read() if request.can_read_body else b""
        except web.HTTPRequestEntityTooLarge:
            body = b""
            request[_BODY_TOO_LARGE] = True
        path, _, query_string = request.raw_path.partition("?")
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=path,
                query_string=query_string,
                query=MultiDictProxy(MultiDict(request.query)),
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                body=body,
            )
        )
        self._activity.fire()
        incoming = request.headers.get("x-request-id", "")
        request[_REQUEST_ID] = (
            incoming if _REQUEST_ID_OK.fullmatch(incoming) else secrets.token_urlsafe(15)
        )
        return await handler(request)

    async def _stamp(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["electric-server"] = SERVER_VERSION
        response.headers["x-request-id"] = request.get(_REQUEST_ID) or secrets.token_urlsafe(15)

    # -- simple routes ------------------------------------------------------------------------

    def _unauthorized(self, request: web.BaseRequest) -> web.Response | None:
        if self.secret is None:
            return None
        query = request.query
        supplied = next(
            (query.getall(key)[-1] for key in ("secret", "api_secret") if key in query), None
        )
        if supplied is not None and hmac.compare_digest(supplied.encode(), self.secret.encode()):
            return None
        return _json(
            request, 401, {"message": "Unauthorized - Invalid API secret"}, cache=PLUG_DEFAULT_CACHE
        )

    async def _delete_endpoint(self, request: web.Request) -> web.StreamResponse:
        denied = self._unauthorized(request)
        return denied or _json(request, 405, {"message": "DELETE not allowed"})

    async def _options_endpoint(self, request: web.Request) -> web.StreamResponse:
        headers = _cors(request)
        headers["access-control-max-age"] = "86400"
        asked = ",".join(request.headers.getall("Access-Control-Request-Headers", []))
        allowed = [h.strip() for h in asked.split(",") if h.strip().lower() in PREFLIGHT_HEADERS]
        if allowed:
            headers["access-control-allow-headers"] = ",".join(allowed)
        return web.Response(status=204, headers=headers)

    async def _health_endpoint(self, request: web.Request) -> web.StreamResponse:
        return _json(
            request,
            200,
            {"status": "active"},
            cache=HEALTH_CACHE,
            headers={"access-control-allow-methods": OTHER_METHODS},
        )

    async def _root_endpoint(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200, headers={"cache-control": PLUG_DEFAULT_CACHE})

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=404, text="Not found", headers={"cache-control": PLUG_DEFAULT_CACHE}
        )

    # -- /v1/shape ----------------------------------------------------------------------------

    async def _shape_endpoint(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._serve_shape(request)
        except asyncio.CancelledError:
            self._responder.gone(request)
            raise

    async def _serve_shape(self, request: web.Request) -> web.StreamResponse:
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        params = _collect_query(request.query)
        if request.method == "POST":
            if request.get(_BODY_TOO_LARGE):
                return _json(request, 413, {"error": "Request body too large"})
            try:
                body = json.loads(await request.read())
            except ValueError as exc:
                return _json(
                    request, 400, {"error": "Invalid JSON in request body", "details": str(exc)}
                )
            if not isinstance(body, dict):
                return _json(request, 400, {"error": "Request body must be a JSON object"})
            params = _merge_body(params, body)
        outcome = self._validator.validate(params)
        if isinstance(outcome, _Rejection):
            return _invalid(request, outcome.errors)
        return await self._server.serve(request, outcome)
