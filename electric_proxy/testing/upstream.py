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
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hmac
import itertools
import json
import math
import random
import re
import secrets
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from .where_eval import (
    CompiledWhere,
    Row,
    WhereError,
    coerce,
    compile_order_by,
    compile_where,
    normalize_type,
    to_text,
)

__all__ = ["Column", "FakeElectric", "RecordedRequest"]

SERVER_VERSION: Final = "ElectricSQL/1.7.12-fake"
EXPOSED_HEADERS: Final = (
    "electric-cursor,electric-handle,electric-has-data,electric-offset,electric-schema,"
    "electric-up-to-date,electric-internal-known-error,retry-after"
)
SHAPE_METHODS: Final = "GET, POST, HEAD, DELETE, OPTIONS"
OTHER_METHODS: Final = "GET, HEAD"
PREFLIGHT_HEADERS: Final = frozenset({"if-none-match", "traceparent"})
INITIAL_CACHE: Final = "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746"
LIVE_CACHE: Final = "public, max-age=5, stale-while-revalidate=5"
CATCH_UP_CACHE: Final = "public, max-age=60, stale-while-revalidate=300"
REDIRECT_CACHE: Final = "public, max-age=60, must-revalidate"
PLUG_DEFAULT_CACHE: Final = "max-age=0, private, must-revalidate"
HEALTH_CACHE: Final = "no-cache, no-store, must-revalidate"
SUBSET_KEYS: Final = frozenset(
    {"where", "order_by", "limit", "offset", "params", "where_expr", "order_by_expr"}
)
MAX_BODY: Final = 8_000_000
JSON_BATCH: Final = 500
CURSOR_EPOCH: Final = datetime(2024, 10, 9, tzinfo=UTC).timestamp()
OP_INF: Final = 2**63 - 1

Offset = tuple[int, int]
BEFORE_ALL: Final[Offset] = (-1, 0)
_INITIAL_LSN: Final = 24_000_000
_LSN_STEP: Final = 128
_FIRST_TXID: Final = 1000
_OFFSET_RE: Final = re.compile(r"(\d+)_(\d+|inf)")
_NESTED_KEY: Final = re.compile(r"([^\[\]]+)\[([^\[\]]*)\]")
_UNQUOTED_IDENT: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_REQUEST_ID_OK: Final = re.compile(r"[\x21-\x7e]{20,200}")
_REQUEST_ID: Final = web.RequestKey("electric_request_id", str)
_CLIENT_GONE: Final = web.RequestKey("electric_client_gone", bool)
_BODY_TOO_LARGE: Final = web.RequestKey("electric_body_too_large", bool)


@dataclass(frozen=True)
class Column:
    """A table column as Electric's inspector sees it; `type` is the Postgres type name."""

    name: str
    type: str = "text"
    primary_key: bool = False
    not_null: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it, so tests can assert what the proxy sent upstream."""

    method: str
    path: str
    query_string: str
    query: MultiDictProxy[str]
    headers: CIMultiDictProxy[str]
    body: bytes


# ---------------------------------------------------------------------------------------------
# Offsets, identifiers, parameters.
# ---------------------------------------------------------------------------------------------


def format_offset(offset: Offset) -> str:
    """`-1` or `<tx>_<op>`, with `inf` for the open-ended op position."""
    if offset == BEFORE_ALL:
        return "-1"
    tx, op = offset
    return f"{tx}_{'inf' if op == OP_INF else op}"


def parse_offset(text: str) -> Offset | None:
    if text == "-1":
        return BEFORE_ALL
    match = _OFFSET_RE.fullmatch(text)
    if match is None:
        return None
    op = match.group(2)
    return int(match.group(1)), OP_INF if op == "inf" else int(op)


def _split_unquoted(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _parse_identifier(ident: str) -> tuple[str | None, str | None]:
    """Electric's `Identifiers.parse/1`: (name, None) or (None, error message)."""
    if len(ident) >= 2 and ident.startswith('"') and ident.endswith('"'):
        inner = ident[1:-1]
        if not inner:
            return None, "Invalid zero-length delimited identifier"
        if '"' in inner.replace('""', ""):
            return None, f"Invalid identifier with unescaped quote: {inner}"
        return inner.replace('""', '"'), None
    if not ident:
        return None, "Invalid zero-length delimited identifier"
    if not _UNQUOTED_IDENT.fullmatch(ident):
        return None, f"Invalid unquoted identifier contains special characters: {ident}"
    return ident.lower(), None


def _parse_relation(text: str) -> tuple[tuple[str, str] | None, str | None]:
    parts = _split_unquoted(text, ".")
    if len(parts) > 2:
        return None, f"Invalid relation name, too many dots: {text}"
    names: list[str] = []
    for part in parts:
        name, error = _parse_identifier(part)
        if name is None:
            return None, error
        names.append(name)
    return ((names[0], names[1]) if len(names) == 2 else ("public", names[0])), None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _collect_query(query: Mapping[str, str] | MultiDictProxy[str]) -> dict[str, object]:
    """Decode a query the way Plug does: nested `params[1]` maps, and the LAST repeat wins."""
    params: dict[str, object] = {}
    items = query.items()
    for key, value in items:
        if key.startswith("subset__"):
            _nest(params, "subset", key.removeprefix("subset__"), value)
        elif match := _NESTED_KEY.fullmatch(key):
            _nest(params, match.group(1), match.group(2), value)
        else:
            params[key] = value
    return params


def _nest(params: dict[str, object], outer: str, inner: str, value: object) -> None:
    current = params.get(outer)
    if not isinstance(current, dict):
        current = {}
        params[outer] = current
    current[inner] = value


def _merge_body(query: dict[str, object], body: dict[str, object]) -> dict[str, object]:
    """Electric's `merge_body_params/2` (§9.2), hazard included, so proxy tests can observe it.

    With a `subset` map in the body the whole body is merged over the query (body `table`,
    `where`, `params`... replace the query's). Otherwise subset keys move under `subset` and
    every other body key still replaces the query value.
    """
    query_subset = query.get("subset")
    base_subset = dict(query_subset) if isinstance(query_subset, dict) else {}
    body_subset = body.get("subset")
    if isinstance(body_subset, dict):
        merged = {**query, **body}
        merged["subset"] = {**base_subset, **body_subset}
        return merged
    merged = dict(query)
    for key, value in body.items():
        if key in SUBSET_KEYS:
            base_subset[key] = value
        else:
            merged[key] = value
    if base_subset:
        merged["subset"] = base_subset
    return merged


def _cast_bool(value: object) -> bool | None:
    """Ecto's boolean cast; `None` means the value is invalid."""
    if isinstance(value, bool):
        return value
    return {"true": True, "1": True, "false": False, "0": False}.get(str(value))


def _cast_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    return None


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _if_none_match(request: web.BaseRequest) -> set[str]:
    tags: set[str] = set()
    for header in request.headers.getall("If-None-Match", []):
        tags.update(part.strip().strip('"') for part in header.split(","))
    return tags


def _up_to_date_message(lsn: int) -> dict[str, object]:
    return {"headers": {"control": "up-to-date", "global_last_seen_lsn": str(lsn)}}


# ---------------------------------------------------------------------------------------------
# Tables and shapes.
# ---------------------------------------------------------------------------------------------


class _Table:
    """Rows keyed by primary key, holding evaluation values (see `where_eval.coerce`)."""

    def __init__(self, schema: str, name: str, columns: Sequence[Column]) -> None:
        if not columns:
            raise ValueError("a table needs at least one column")
        self.schema = schema
        self.name = name
        self.columns = list(columns)
        self.types = {column.name: normalize_type(column.type) for column in columns}
        declared = [column.name for column in columns if column.primary_key]
        self.pk = declared or [column.name for column in columns]
        self.rows: dict[tuple[object, ...], dict[str, object]] = {}

    @property
    def relation(self) -> list[str]:
        return [self.schema, self.name]

    @property
    def quoted(self) -> str:
        return f'"{self.schema}"."{self.name}"'

    def coerce_row(self, row: Mapping[str, object]) -> dict[str, object]:
        unknown = sorted(set(row) - set(self.types))
        if unknown:
            raise ValueError(f"unknown column(s) for {self.quoted}: {', '.join(unknown)}")
        return {name: coerce(value, self.types[name]) for name, value in row.items()}

    def key_of(self, row: Mapping[str, object]) -> tuple[object, ...]:
        missing = [name for name in self.pk if name not in row]
        if missing:
            raise ValueError(f"missing primary key column(s): {', '.join(missing)}")
        return tuple(row[name] for name in self.pk)

    def schema_header(self, selected: Iterable[str]) -> str:
        wanted = set(selected)
        described: dict[str, dict[str, object]] = {}
        for column in self.columns:
            if column.name not in wanted:
                continue
            pg_type = self.types[column.name]
            info: dict[str, object] = {"type": pg_type.rstrip("[]")}
            if pg_type.endswith("[]"):
                info["dims"] = pg_type.count("[]")
            if column.name in self.pk and any(c.primary_key for c in self.columns):
                info["pk_index"] = self.pk.index(column.name)
            if column.not_null or column.primary_key:
                info["not_null"] = True
            described[column.name] = info
        return json.dumps(described, separators=(",", ":"))


@dataclass(frozen=True)
class _ShapeDef:
    """Shape identity: two requests share a handle exactly when these fields are equal."""

    relation: tuple[str, str]
    where: str | None
    params: tuple[tuple[str, str], ...]
    columns: tuple[str, ...]
    replica: str
    log: str


class _Signal:
    """Wakes every coroutine waiting on it in one go, then re-arms for the next change."""

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def fire(self) -> None:
        future, self._future = self._future, None
        if future is not None and not future.done():
            with contextlib.suppress(RuntimeError):
                future.set_result(None)

    async def wait(self, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        future = self._future
        if future is None or future.done() or future.get_loop() is not loop:
            future = self._future = loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(future), max(seconds, 0.0))
        except TimeoutError:
            return False
        return True


class _Shape:
    """One handle's log: snapshot chunks at offsets `0_<n>`, then one entry per transaction."""

    def __init__(
        self,
        definition: _ShapeDef,
        handle: str,
        table: _Table,
        predicate: CompiledWhere | None,
        chunk_rows: int,
    ) -> None:
        self.definition = definition
        self.handle = handle
        self.table = table
        self.predicate = predicate
        self.chunk_rows = max(chunk_rows, 1)
        self.selected = [c.name for c in table.columns if c.name in definition.columns]
        self.full_replica = definition.replica == "full"
        self.offsets: list[Offset] = []
        self.messages: list[dict[str, object]] = []
        self.chunk_ends: list[Offset] = []
        self.last_offset: Offset = (0, 0)
        self.open_count = 0
        self.rotated = False
        self.signal = _Signal()

    def matches(self, row: Row) -> bool:
        return self.predicate is None or self.predicate.matches(row)

    def snapshot(self, snapshot_txid: int) -> None:
        rows = [r for r in self.table.rows.values() if self.matches(r)]
        if self.definition.log != "full":
            rows = []
        chunks = [rows[i : i + self.chunk_rows] for i in range(0, len(rows), self.chunk_rows)]
        chunks = chunks or [[]]
        for index, chunk in enumerate(chunks):
            offset = (0, index)
            for row in chunk:
                self._push(offset, self.row_message(row, "insert", self.selected))
            if index == len(chunks) - 1 and self.definition.log == "full":
                self._push(
                    offset,
                    {
                        "headers": {
                            "control": "snapshot-end",
                            "xmin": str(snapshot_txid),
                            "xmax": str(snapshot_txid),
                            "xip_list": [],
                        }
                    },
                )
            self.chunk_ends.append(offset)
            self.last_offset = offset

    def _push(self, offset: Offset, message: dict[str, object]) -> None:
        self.offsets.append(offset)
        self.messages.append(message)

    def append(self, offset: Offset, message: dict[str, object]) -> None:
        self._push(offset, message)
        self.last_offset = offset
        self.open_count += 1
        if self.open_count >= self.chunk_rows:
            self.chunk_ends.append(offset)
            self.open_count = 0
        self.signal.fire()

    def read(self, after: Offset) -> tuple[list[dict[str, object]], Offset]:
        """Messages past `after` up to the end of the chunk holding the first of them."""
        start = bisect.bisect_right(self.offsets, after)
        if start == len(self.offsets):
            return [], self.last_offset
        index = bisect.bisect_left(self.chunk_ends, self.offsets[start])
        end = self.chunk_ends[index] if index < len(self.chunk_ends) else self.last_offset
        stop = bisect.bisect_right(self.offsets, end)
        return self.messages[start:stop], end

    def key(self, row: Row) -> str:
        parts = []
        for name in self.table.pk:
            text = to_text(row.get(name), self.table.types[name])
            parts.append("_" if text is None else '"' + text.replace("/", "//") + '"')
        return self.table.quoted + "/" + "/".join(parts)

    def values(self, row: Row, names: Iterable[str]) -> dict[str, str | None]:
        return {name: to_text(row.get(name), self.table.types[name]) for name in names}

    def row_message(self, row: Row, operation: str, names: Iterable[str]) -> dict[str, object]:
        return {
            "key": self.key(row),
            "value": self.values(row, names),
            "headers": {"operation": operation, "relation": self.table.relation},
        }

    def change(
        self, old: Row | None, new: Row | None, changed: set[str]
    ) -> dict[str, object] | None:
        """What this shape sees of one row change, or None if it does not concern the shape."""
        was = old is not None and self.matches(old)
        now = new is not None and self.matches(new)
        if was and now and old is not None and new is not None:
            touched = [name for name in self.selected if name in changed]
            if not touched:
                return None
            if self.full_replica:
                message = self.row_message(new, "update", self.selected)
                message["old_value"] = self.values(old, touched)
                return message
            keep = set(self.table.pk) | set(touched)
            return self.row_message(new, "update", [n for n in self.selected if n in keep])
        if now and new is not None:
            return self.row_message(new, "insert", self.selected)
        if was and old is not None:
            names = self.selected if self.full_replica else self.table.pk
            return self.row_message(old, "delete", names)
        return None


@dataclass
class _Subset:
    where: CompiledWhere | None
    order: Callable[[Sequence[Row]], list[Row]] | None
    limit: int | None
    offset: int | None


@dataclass
class _ShapeRequest:
    """A validated `/v1/shape` request."""

    definition: _ShapeDef
    table: _Table
    predicate: CompiledWhere | None
    offset: Offset
    offset_text: str
    now: bool
    handle: str | None
    live: bool
    sse: bool
    cursor: str | None
    subset: _Subset | None


@dataclass
class _Rejection:
    """A 400 with Ecto-style `errors`, mirroring `Api.Params.validate/2`."""

    errors: dict[str, object] = field(default_factory=dict)

    def add(self, name: str, message: str) -> None:
        existing = self.errors.setdefault(name, [])
        if isinstance(existing, list):
            existing.append(message)


# ---------------------------------------------------------------------------------------------
# The server.
# ---------------------------------------------------------------------------------------------


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
        self._tables: dict[tuple[str, str], _Table] = {}
        self._shapes: dict[_ShapeDef, _Shape] = {}
        self._issued: set[str] = set()
        self._where_cache: dict[tuple[object, ...], CompiledWhere] = {}
        self._txid = _FIRST_TXID - 1
        self._lsn = _INITIAL_LSN
        self._marks = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._activity = _Signal()

    # -- data ---------------------------------------------------------------------------------

    def add_table(
        self, name: str, columns: Sequence[Column], rows: Iterable[Mapping[str, object]] = ()
    ) -> None:
        """Create a table; `name` is `items` or `public.items`, taken literally (no case folding).

        Values may be Python objects or Postgres text; they are served as Postgres text output.
        """
        schema, _, table_name = name.rpartition(".")
        table = _Table(schema or "public", table_name, columns)
        if (table.schema, table.name) in self._tables:
            raise ValueError(f"table {table.quoted} already exists")
        self._tables[(table.schema, table.name)] = table
        for row in rows:
            self._store_new(table, row)

    def insert(self, table: str, row: Mapping[str, object]) -> None:
        """Insert one row as its own transaction; missing columns are NULL."""
        target = self._table(table)
        new = self._store_new(target, row)
        self._commit(target, None, new, set(new))

    def update(self, table: str, row: Mapping[str, object]) -> None:
        """Update one row (primary key + changed columns) as its own transaction."""
        target = self._table(table)
        changes = target.coerce_row(row)
        key = target.key_of(changes)
        if key not in target.rows:
            raise KeyError(f"no row with primary key {key!r} in {target.quoted}")
        old = target.rows[key]
        new = {**old, **changes}
        changed = {name for name in changes if name not in target.pk and old[name] != new[name]}
        target.rows[key] = new
        self._commit(target, old, new, changed)

    def delete(self, table: str, pk: Mapping[str, object]) -> None:
        """Delete one row by primary key as its own transaction."""
        target = self._table(table)
        key = target.key_of(target.coerce_row(pk))
        if key not in target.rows:
            raise KeyError(f"no row with primary key {key!r} in {target.quoted}")
        old = target.rows.pop(key)
        self._commit(target, old, None, set())

    def rotate(self, table: str) -> None:
        """Give every shape on `table` a new handle (as after invalidation); old ones get 409."""
        target = self._table(table)
        for definition, shape in list(self._shapes.items()):
            if shape.table is target:
                self._shapes[definition] = self._build_shape(definition, target, shape.predicate)
                shape.rotated = True
                shape.signal.fire()

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

    def handles(self, table: str) -> list[str]:
        """Current handles of the shapes defined on `table`, oldest first."""
        target = self._table(table)
        return [shape.handle for shape in self._shapes.values() if shape.table is target]

    def _table(self, name: str) -> _Table:
        schema, _, table_name = name.rpartition(".")
        try:
            return self._tables[(schema or "public", table_name)]
        except KeyError:
            raise KeyError(f"unknown table {name!r}") from None

    def _store_new(self, table: _Table, row: Mapping[str, object]) -> dict[str, object]:
        values = table.coerce_row(row)
        new = {column.name: values.get(column.name) for column in table.columns}
        key = table.key_of(new)
        if key in table.rows:
            raise ValueError(f"duplicate primary key {key!r} in {table.quoted}")
        table.rows[key] = new
        return new

    def _commit(self, table: _Table, old: Row | None, new: Row | None, changed: set[str]) -> None:
        self._txid += 1
        self._lsn += _LSN_STEP
        for shape in list(self._shapes.values()):
            if shape.table is not table:
                continue
            message = shape.change(old, new, changed)
            if message is None:
                continue
            headers = message["headers"]
            assert isinstance(headers, dict)
            headers.update(txids=[self._txid], lsn=str(self._lsn), op_position=0, last=True)
            shape.append((self._lsn, 0), message)

    def _build_shape(
        self, definition: _ShapeDef, table: _Table, predicate: CompiledWhere | None
    ) -> _Shape:
        digest = zlib.crc32(repr(definition).encode()) & 0x7FFFFFF
        stamp = time.time_ns() // 1000
        while f"{digest}-{stamp}" in self._issued:
            stamp += 1
        handle = f"{digest}-{stamp}"
        self._issued.add(handle)
        shape = _Shape(definition, handle, table, predicate, self.chunk_rows)
        shape.snapshot(self._txid + 1)
        return shape

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

    def _cors(self, request: web.BaseRequest, methods: str = SHAPE_METHODS) -> CIMultiDict[str]:
        return CIMultiDict(
            {
                "access-control-allow-origin": request.headers.get("Origin", "*"),
                "access-control-expose-headers": EXPOSED_HEADERS,
                "access-control-allow-methods": methods,
            }
        )

    def _json(
        self,
        request: web.BaseRequest,
        status: int,
        body: object,
        *,
        cache: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        """A small JSON response carrying the cache headers Electric would give it (§5)."""
        merged = self._cors(request)
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

    def _invalid(self, request: web.BaseRequest, errors: Mapping[str, object]) -> web.Response:
        return self._json(request, 400, {"message": "Invalid request", "errors": errors})

    def _must_refetch(self, request: web.BaseRequest, handle: str) -> web.Response:
        cache = "no-cache" if request.method not in ("GET", "HEAD") else REDIRECT_CACHE
        return self._json(
            request,
            409,
            [{"headers": {"control": "must-refetch"}}],
            cache=cache,
            headers={"electric-handle": handle},
        )

    def _unauthorized(self, request: web.BaseRequest) -> web.Response | None:
        if self.secret is None:
            return None
        query = request.query
        supplied = next(
            (query.getall(key)[-1] for key in ("secret", "api_secret") if key in query), None
        )
        if supplied is not None and hmac.compare_digest(supplied.encode(), self.secret.encode()):
            return None
        return self._json(
            request, 401, {"message": "Unauthorized - Invalid API secret"}, cache=PLUG_DEFAULT_CACHE
        )

    async def _delete_endpoint(self, request: web.Request) -> web.StreamResponse:
        denied = self._unauthorized(request)
        return denied or self._json(request, 405, {"message": "DELETE not allowed"})

    async def _options_endpoint(self, request: web.Request) -> web.StreamResponse:
        headers = self._cors(request)
        headers["access-control-max-age"] = "86400"
        asked = ",".join(request.headers.getall("Access-Control-Request-Headers", []))
        allowed = [h.strip() for h in asked.split(",") if h.strip().lower() in PREFLIGHT_HEADERS]
        if allowed:
            headers["access-control-allow-headers"] = ",".join(allowed)
        return web.Response(status=204, headers=headers)

    async def _health_endpoint(self, request: web.Request) -> web.StreamResponse:
        return self._json(
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
            self._client_gone(request)
            raise

    def _client_gone(self, request: web.BaseRequest) -> None:
        if not request.get(_CLIENT_GONE):
            request[_CLIENT_GONE] = True
            self.cancelled += 1
            self._activity.fire()

    async def _serve_shape(self, request: web.Request) -> web.StreamResponse:
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        params = _collect_query(request.query)
        if request.method == "POST":
            if request.get(_BODY_TOO_LARGE):
                return self._json(request, 413, {"error": "Request body too large"})
            try:
                body = json.loads(await request.read())
            except ValueError as exc:
                return self._json(
                    request, 400, {"error": "Invalid JSON in request body", "details": str(exc)}
                )
            if not isinstance(body, dict):
                return self._json(request, 400, {"error": "Request body must be a JSON object"})
            params = _merge_body(params, body)
        outcome = self._validate(params)
        if isinstance(outcome, _Rejection):
            return self._invalid(request, outcome.errors)
        req = outcome
        shape = self._shapes.get(req.definition)
        if shape is None:
            shape = self._build_shape(req.definition, req.table, req.predicate)
            self._shapes[req.definition] = shape
        if req.handle is not None and req.handle != shape.handle:
            return self._must_refetch(request, shape.handle)
        if req.subset is not None:
            return await self._serve_subset(request, req, shape, req.subset)
        if req.now:
            headers = self._log_headers(
                request, req, shape, shape.last_offset, up_to_date=True, has_data=False
            )
            return await self._send_json(request, headers, [_up_to_date_message(self._lsn)])
        if req.offset > shape.last_offset:
            return await self._out_of_bounds(request, req, shape)
        messages, end = shape.read(req.offset)
        up_to_date = self._up_to_date(req, shape, end)
        etag = self._etag(shape, req, end, no_changes=False)
        if etag.strip('"') in _if_none_match(request):
            headers = self._log_headers(
                request, req, shape, end, up_to_date=up_to_date, has_data=True, etag=etag
            )
            return web.Response(status=304, headers=headers)
        if req.live and not messages:
            if req.sse:
                return await self._stream_sse(request, req, shape, end, up_to_date)
            return await self._hold(request, req, shape)
        return await self._send_log(request, req, shape, messages, end)

    def _validate(self, params: Mapping[str, object]) -> _ShapeRequest | _Rejection:
        """`Api.Params.validate/2`: the same checks, in the same order, with Electric's words."""
        problem = _Rejection()
        text: dict[str, str | None] = {}
        for name in ("table", "offset", "handle", "where", "columns", "replica", "log"):
            value = params.get(name)
            if isinstance(value, list) and name == "columns" and value:
                value = ",".join(_quote(str(item)) for item in value)
            if value is None or value == "":
                text[name] = None
            elif isinstance(value, str):
                text[name] = value
            else:
                problem.add(name, "is invalid")
        live = params.get("live", "false") != "false"
        sse_raw = (
            params["live_sse"]
            if "live_sse" in params
            else params.get("experimental_live_sse", False)
        )
        sse = _cast_bool(sse_raw if sse_raw != "" else False)
        if sse is None:
            problem.add("live_sse", "is invalid")
        replica = text.get("replica") or "default"
        log = text.get("log") or "full"
        if replica not in ("default", "full"):
            problem.add("replica", "is invalid")
        if log not in ("full", "changes_only"):
            problem.add("log", "is invalid")
        raw_params = params.get("params", {})
        if not isinstance(raw_params, dict) or not all(
            isinstance(v, str) for v in raw_params.values()
        ):
            problem.add("params", "is invalid")
            raw_params = {}
        columns: list[str] | None = None
        if text.get("columns"):
            columns = []
            for part in _split_unquoted(text["columns"] or "", ","):
                column_name, error = _parse_identifier(part)
                if column_name is None:
                    problem.add("columns", error or "is invalid")
                    break
                columns.append(column_name)
        if problem.errors:
            return problem

        offset_text = text["offset"]
        if offset_text is None:
            problem.add("offset", "can't be blank")
            return problem
        now = offset_text == "now"
        parsed = BEFORE_ALL if now else parse_offset(offset_text)
        if parsed is None:
            problem.add("offset", "has invalid format")
            return problem
        handle: str | None = text["handle"]
        if parsed == BEFORE_ALL:
            handle = None
        elif handle is None:
            problem.add("handle", "can't be blank when offset != -1")
            return problem
        if live and now:
            problem.add("live", "can't be true when offset is 'now'")
        elif live and parsed == BEFORE_ALL:
            problem.add("live", "can't be true when offset == -1")
        elif sse and not live:
            problem.add("live_sse", "can't be true unless live is also true")
        if problem.errors:
            return problem

        table = self._resolve_table(text["table"], problem)
        if table is None:
            return problem
        selected = self._select_columns(table, columns, problem)
        shape_params = {str(k): str(v) for k, v in raw_params.items()}
        predicate = None
        if selected is not None and text["where"] is not None:
            predicate = self._compile_shape_where(table, text["where"], shape_params, problem)
        if problem.errors or selected is None:
            return problem
        definition = _ShapeDef(
            relation=(table.schema, table.name),
            where=predicate.sql if predicate else None,
            params=tuple(sorted(shape_params.items())) if predicate else (),
            columns=tuple(selected),
            replica=replica,
            log=log,
        )
        subset = None
        if "subset" in params:
            subset = self._validate_subset(params["subset"], table, problem)
            if subset is None:
                return problem
        cursor = params.get("cursor")
        return _ShapeRequest(
            definition=definition,
            table=table,
            predicate=predicate,
            offset=parsed,
            offset_text="now" if now else format_offset(parsed),
            now=now,
            handle=handle,
            live=live,
            sse=bool(sse) and live,
            cursor=cursor if isinstance(cursor, str) else None,
            subset=subset,
        )

    def _resolve_table(self, name: str | None, problem: _Rejection) -> _Table | None:
        if name is None:
            problem.add("table", "can't be blank")
            return None
        relation, error = _parse_relation(name)
        if relation is None:
            problem.add("table", error or "is invalid")
            return None
        table = self._tables.get(relation)
        if table is None:
            problem.add(
                "table",
                f"Table {_quote(relation[0])}.{_quote(relation[1])} does not "
                "exist. If the table name contains capitals or special characters you "
                "must quote it.",
            )
        return table

    def _select_columns(
        self, table: _Table, columns: list[str] | None, problem: _Rejection
    ) -> list[str] | None:
        if columns is None:
            return sorted(table.types)
        missing_pk = [name for name in table.pk if name not in columns]
        unknown = [name for name in columns if name not in table.types]
        if missing_pk and any(c.primary_key for c in table.columns):
            problem.add(
                "columns",
                "The list of columns must include all primary key columns, "
                "missing: " + ", ".join(missing_pk),
            )
        elif unknown:
            problem.add(
                "columns", "The following columns are not found on the table: " + ", ".join(unknown)
            )
        else:
            return sorted(set(columns) | set(table.pk))
        return None

    def _check_param_keys(self, given: Mapping[str, str], problem: _Rejection, key: str) -> bool:
        if not all(re.fullmatch(r"\d+", name) for name in given):
            problem.add(key, "Parameters can only use numbers as keys")
            return False
        if sorted(int(name) for name in given) != list(range(1, len(given) + 1)):
            problem.add(key, "Parameters must be numbered sequentially, starting from 1")
            return False
        return True

    def _compile_shape_where(
        self, table: _Table, where: str, given: dict[str, str], problem: _Rejection
    ) -> CompiledWhere | None:
        if not self._check_param_keys(given, problem, "params"):
            return None
        cache_key = (
            table.schema,
            table.name,
            tuple(table.types.items()),
            where,
            tuple(sorted(given.items())),
        )
        compiled = self._where_cache.get(cache_key)
        if compiled is None:
            try:
                compiled = compile_where(where, table.types, given)
            except WhereError as exc:
                problem.add("where", str(exc))
                return None
            self._where_cache[cache_key] = compiled
        return compiled

    def _validate_subset(self, raw: object, table: _Table, problem: _Rejection) -> _Subset | None:
        if not isinstance(raw, dict):
            problem.add("subset", "is invalid")
            return None
        inner = _Rejection()
        values = {k: (None if v == "" else v) for k, v in raw.items()}
        limit = offset = None
        for name in ("limit", "offset"):
            if values.get(name) is not None:
                number = _cast_int(values[name])
                if number is None:
                    inner.add(name, "is invalid")
                elif name == "limit":
                    limit = number
                else:
                    offset = number
        for name in ("where", "order_by"):
            if values.get(name) is not None and not isinstance(values[name], str):
                inner.add(name, "is invalid")
        given = self._subset_params(values.get("params"), inner)
        if limit is not None and limit <= 0:
            inner.add("limit", "must be greater than 0")
        if offset is not None and offset < 0:
            inner.add("offset", "must be greater than or equal to 0")
        order_text = values.get("order_by")
        if (limit is not None or offset is not None) and order_text is None:
            inner.add("order_by", "order_by is required when limit or offset is present")
        where = order = None
        if (
            not inner.errors
            and isinstance(values.get("where"), str)
            and self._check_param_keys(given, inner, "params")
        ):
            try:
                where = compile_where(str(values["where"]), table.types, given)
            except WhereError as exc:
                inner.add("where", str(exc))
        if not inner.errors and isinstance(order_text, str):
            try:
                order = compile_order_by(order_text, table.types)
            except WhereError as exc:
                inner.add("order_by", str(exc))
        if inner.errors:
            problem.errors["subset"] = inner.errors
            return None
        return _Subset(where=where, order=order, limit=limit, offset=offset)

    def _subset_params(self, raw: object, inner: _Rejection) -> dict[str, str]:
        if raw is None:
            return {}
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                inner.add("params", "params must be valid JSON")
                return {}
            if not isinstance(raw, dict):
                inner.add("params", "params must be a JSON object")
                return {}
        if not isinstance(raw, dict):
            inner.add("params", "is invalid")
            return {}
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}

    # -- responses ----------------------------------------------------------------------------

    def _up_to_date(self, req: _ShapeRequest, shape: _Shape, end: Offset) -> bool:
        """`determine_up_to_date/1`: never on `offset=-1`, else when the chunk reaches the end."""
        return req.offset != BEFORE_ALL and end >= max(shape.last_offset, req.offset)

    def _etag(self, shape: _Shape, req: _ShapeRequest, end: Offset, *, no_changes: bool) -> str:
        tag = f"{shape.handle}:{req.offset_text}:{format_offset(end)}"
        if no_changes:
            tag += f":{time.monotonic_ns()}"
        return f'"{tag}"'

    def _cursor(self, client_cursor: str | None) -> str:
        """`get_next_interval_timestamp/2`: a moving per-interval cache key for live requests."""
        interval = int(self.long_poll_timeout)
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

    def _cache_control(self, request: web.BaseRequest, req: _ShapeRequest) -> str:
        if request.method not in ("GET", "HEAD"):
            return "no-cache"
        if req.offset == BEFORE_ALL and not req.now:
            return INITIAL_CACHE
        if req.live and req.sse:
            return f"public, max-age={max(1, int(self.sse_timeout) - 1)}"
        return LIVE_CACHE if req.live else CATCH_UP_CACHE

    def _log_headers(
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
        headers = self._cors(request)
        headers["content-type"] = "text/event-stream" if req.sse else "application/json"
        headers["cache-control"] = self._cache_control(request, req)
        if req.live:
            headers["electric-cursor"] = self._cursor(req.cursor)
        headers["etag"] = etag or self._etag(shape, req, end, no_changes=no_changes)
        headers["electric-handle"] = shape.handle
        if not req.live:
            headers["electric-schema"] = shape.table.schema_header(shape.selected)
        if up_to_date:
            headers["electric-up-to-date"] = ""
        headers["electric-offset"] = format_offset(end)
        headers["electric-has-data"] = "true" if has_data else "false"
        return headers

    async def _send_log(
        self,
        request: web.Request,
        req: _ShapeRequest,
        shape: _Shape,
        messages: list[dict[str, object]],
        end: Offset,
    ) -> web.StreamResponse:
        up_to_date = self._up_to_date(req, shape, end)
        lsn = end[0] if req.live else max(self._lsn, end[0])
        items = messages + ([_up_to_date_message(lsn)] if up_to_date else [])
        headers = self._log_headers(request, req, shape, end, up_to_date=up_to_date, has_data=True)
        if req.sse:
            return await self._send_events(request, headers, items)
        return await self._send_json(request, headers, items)

    async def _no_changes(
        self, request: web.Request, req: _ShapeRequest, shape: _Shape
    ) -> web.StreamResponse:
        headers = self._log_headers(
            request, req, shape, shape.last_offset, up_to_date=True, has_data=False, no_changes=True
        )
        return await self._send_json(request, headers, [_up_to_date_message(self._lsn)])

    async def _hold(
        self, request: web.Request, req: _ShapeRequest, shape: _Shape
    ) -> web.StreamResponse:
        """A live long-poll: answer on the first change, rotation, or `long_poll_timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.long_poll_timeout
        self._held(+1)
        try:
            while True:
                if shape.rotated:
                    return self._must_refetch(request, self._current_handle(shape))
                messages, end = shape.read(req.offset)
                if messages:
                    return await self._send_log(request, req, shape, messages, end)
                remaining = deadline - loop.time()
                if remaining <= 0 or not await shape.signal.wait(remaining):
                    break
        finally:
            self._held(-1)
        return await self._no_changes(request, req, shape)

    async def _out_of_bounds(
        self, request: web.Request, req: _ShapeRequest, shape: _Shape
    ) -> web.StreamResponse:
        """An offset past the log end is held for half a long-poll, then refused (§2)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.long_poll_timeout / 2
        self._held(+1)
        try:
            while not shape.rotated and req.offset > shape.last_offset:
                remaining = deadline - loop.time()
                if remaining <= 0 or not await shape.signal.wait(remaining):
                    break
        finally:
            self._held(-1)
        if shape.rotated:
            return self._must_refetch(request, self._current_handle(shape))
        if req.offset > shape.last_offset:
            return self._invalid(request, {"offset": ["out of bounds for this shape"]})
        messages, end = shape.read(req.offset)
        return await self._send_log(request, req, shape, messages, end)

    def _current_handle(self, shape: _Shape) -> str:
        return self._shapes[shape.definition].handle

    def _coding(self, request: web.BaseRequest) -> web.ContentCoding | None:
        """Bandit's negotiation: the first of deflate/gzip the client lists (q=0 refuses)."""
        if not self.compress:
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

    async def _prepare(self, request: web.BaseRequest, resp: web.StreamResponse) -> bool:
        """False when the client left while a held request was being answered."""
        try:
            await resp.prepare(request)
        except ConnectionResetError:
            self._client_gone(request)
            return False
        return True

    async def _write(self, request: web.BaseRequest, resp: web.StreamResponse, data: bytes) -> bool:
        if request.get(_CLIENT_GONE):
            return False
        try:
            await resp.write(data)
        except ConnectionResetError:
            self._client_gone(request)
            return False
        return True

    async def _finish(self, request: web.BaseRequest, resp: web.StreamResponse) -> None:
        if not request.get(_CLIENT_GONE):
            try:
                await resp.write_eof()
            except ConnectionResetError:
                self._client_gone(request)

    async def _send_json(
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
            if await self._prepare(request, resp):
                await self._finish(request, resp)
            return resp
        coding = self._coding(request)
        if coding is not None:
            resp.enable_compression(coding)
            resp.headers["vary"] = "accept-encoding"
        resp.enable_chunked_encoding()
        if not await self._prepare(request, resp) or not await self._write(request, resp, head):
            return resp
        for start in range(0, len(items), JSON_BATCH):
            batch = b",".join(_dumps(item) for item in items[start : start + JSON_BATCH])
            if not await self._write(request, resp, (b"," if start else b"") + batch):
                return resp
        if await self._write(request, resp, tail):
            await self._finish(request, resp)
        return resp

    async def _open_events(
        self, request: web.Request, headers: CIMultiDict[str]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers=headers)
        if request.method != "HEAD":
            resp.enable_chunked_encoding()
        await self._prepare(request, resp)
        return resp

    async def _send_events(
        self, request: web.Request, headers: CIMultiDict[str], items: Sequence[object]
    ) -> web.StreamResponse:
        """SSE framing for data that was ready at once: write it, then close the stream."""
        resp = await self._open_events(request, headers)
        if request.method != "HEAD":
            for item in items:
                if not await self._write(request, resp, b"data: " + _dumps(item) + b"\n\n"):
                    return resp
        await self._finish(request, resp)
        return resp

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
        headers = self._log_headers(request, req, shape, end, up_to_date=up_to_date, has_data=True)
        resp = await self._open_events(request, headers)
        if request.method == "HEAD":
            await self._finish(request, resp)
            return resp
        loop = asyncio.get_running_loop()
        closes_at = loop.time() + self.sse_timeout
        quiet_since = loop.time()
        since = req.offset
        self._held(+1)
        try:
            while not shape.rotated:
                messages, chunk_end = shape.read(since)
                if messages:
                    if chunk_end >= shape.last_offset:
                        messages = [*messages, _up_to_date_message(chunk_end[0])]
                    for message in messages:
                        if not await self._write(
                            request, resp, b"data: " + _dumps(message) + b"\n\n"
                        ):
                            return resp
                    since, quiet_since = chunk_end, loop.time()
                    continue
                current = loop.time()
                if current >= closes_at:
                    break
                keepalive_at = quiet_since + self.sse_keepalive
                if current >= keepalive_at:
                    if not await self._write(request, resp, b": keep-alive\n\n"):
                        return resp
                    quiet_since = current
                    continue
                await shape.signal.wait(min(closes_at, keepalive_at) - current)
        finally:
            self._held(-1)
        await self._finish(request, resp)
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
        mark = next(self._marks)
        data = []
        for row in rows:
            message = shape.row_message(row, "insert", shape.selected)
            headers_field = message["headers"]
            assert isinstance(headers_field, dict)
            headers_field["snapshot_mark"] = mark
            data.append(message)
        metadata = {
            "xmin": str(self._txid + 1),
            "xmax": str(self._txid + 1),
            "xip_list": [],
            "snapshot_mark": mark,
            "database_lsn": str(self._lsn),
        }
        headers = self._cors(request)
        headers["content-type"] = "application/json"
        headers["cache-control"] = "no-cache"
        headers["electric-snapshot"] = "true"
        headers["electric-handle"] = shape.handle
        headers["electric-offset"] = format_offset(shape.last_offset)
        headers["electric-schema"] = shape.table.schema_header(shape.selected)
        return await self._send_json(
            request,
            headers,
            data,
            head=b'{"metadata":' + _dumps(metadata) + b',"data":[',
            tail=b"]}",
        )
