"""The log model: tables of rows, and each shape's log of messages with its live signal.

A shape's log is what Electric serves: snapshot chunks at offsets `0_<n>`, then one entry per
committed transaction at `<lsn>_0`. Requests read it by offset, one chunk at a time, and held
requests wait on the shape's signal, so a change reaches them the moment it is appended.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ._protocol import Offset
from .where_eval import CompiledWhere, Row, coerce, normalize_type, to_text


@dataclass(frozen=True)
class Column:
    """A table column as Electric's inspector sees it; `type` is the Postgres type name."""

    name: str
    type: str = "text"
    primary_key: bool = False
    not_null: bool = False


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
    """Shape identity: two requests share a handle exactly when these fields are equal.

    Its `repr` seeds the digest half of every handle, so renaming the class or its fields
    changes the handles the fake hands out.
    """

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
