"""The fake's database: its tables, the shapes defined on them, and the transaction clock.

Every data change commits as its own transaction (a new txid and LSN) and lands in the log of
each shape that sees the row, so tests get Electric's shape-aware change routing. The clock
also dates subset snapshots, which is why the server reads `txid` and `lsn` from here.
"""

from __future__ import annotations

import itertools
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from ._shapes import Column, _Shape, _ShapeDef, _Table
from .where_eval import CompiledWhere, Row

_INITIAL_LSN: Final = 24_000_000
_LSN_STEP: Final = 128
_FIRST_TXID: Final = 1000


class _Database:
    """Tables keyed by `(schema, name)` and shapes keyed by definition, as Electric keys them."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], _Table] = {}
        self.shapes: dict[_ShapeDef, _Shape] = {}
        self.txid = _FIRST_TXID - 1
        self.lsn = _INITIAL_LSN
        self._issued: set[str] = set()
        self._marks = itertools.count(1)

    def add_table(
        self, name: str, columns: Sequence[Column], rows: Iterable[Mapping[str, object]]
    ) -> None:
        schema, _, table_name = name.rpartition(".")
        table = _Table(schema or "public", table_name, columns)
        if (table.schema, table.name) in self.tables:
            raise ValueError(f"table {table.quoted} already exists")
        self.tables[(table.schema, table.name)] = table
        for row in rows:
            self._store_new(table, row)

    def insert(self, table: str, row: Mapping[str, object]) -> None:
        target = self.table(table)
        new = self._store_new(target, row)
        self._commit(target, None, new, set(new))

    def update(self, table: str, row: Mapping[str, object]) -> None:
        target = self.table(table)
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
        target = self.table(table)
        key = target.key_of(target.coerce_row(pk))
        if key not in target.rows:
            raise KeyError(f"no row with primary key {key!r} in {target.quoted}")
        old = target.rows.pop(key)
        self._commit(target, old, None, set())

    def rotate(self, table: str, chunk_rows: int) -> None:
        target = self.table(table)
        for definition, shape in list(self.shapes.items()):
            if shape.table is target:
                self.shapes[definition] = self._build_shape(
                    definition, target, shape.predicate, chunk_rows
                )
                shape.rotated = True
                shape.signal.fire()

    def handles(self, table: str) -> list[str]:
        target = self.table(table)
        return [shape.handle for shape in self.shapes.values() if shape.table is target]

    def table(self, name: str) -> _Table:
        schema, _, table_name = name.rpartition(".")
        try:
            return self.tables[(schema or "public", table_name)]
        except KeyError:
            raise KeyError(f"unknown table {name!r}") from None

    def shape_for(
        self,
        definition: _ShapeDef,
        table: _Table,
        predicate: CompiledWhere | None,
        chunk_rows: int,
    ) -> _Shape:
        """The shape serving `definition`, snapshotted when it is first requested."""
        shape = self.shapes.get(definition)
        if shape is None:
            shape = self._build_shape(definition, table, predicate, chunk_rows)
            self.shapes[definition] = shape
        return shape

    def current_handle(self, shape: _Shape) -> str:
        """The handle that replaced `shape` if it was rotated (its own handle otherwise)."""
        return self.shapes[shape.definition].handle

    def next_mark(self) -> int:
        return next(self._marks)

    def _store_new(self, table: _Table, row: Mapping[str, object]) -> dict[str, object]:
        values = table.coerce_row(row)
        new = {column.name: values.get(column.name) for column in table.columns}
        key = table.key_of(new)
        if key in table.rows:
            raise ValueError(f"duplicate primary key {key!r} in {table.quoted}")
        table.rows[key] = new
        return new

    def _commit(self, table: _Table, old: Row | None, new: Row | None, changed: set[str]) -> None:
        self.txid += 1
        self.lsn += _LSN_STEP
        for shape in list(self.shapes.values()):
            if shape.table is not table:
                continue
            message = shape.change(old, new, changed)
            if message is None:
                continue
            headers = message["headers"]
            assert isinstance(headers, dict)
            headers.update(txids=[self.txid], lsn=str(self.lsn), op_position=0, last=True)
            shape.append((self.lsn, 0), message)

    def _build_shape(
        self,
        definition: _ShapeDef,
        table: _Table,
        predicate: CompiledWhere | None,
        chunk_rows: int,
    ) -> _Shape:
        """A snapshotted shape under a fresh `<digest>-<µs>` handle, never one issued before."""
        digest = zlib.crc32(repr(definition).encode()) & 0x7FFFFFF
        stamp = time.time_ns() // 1000
        while f"{digest}-{stamp}" in self._issued:
            stamp += 1
        handle = f"{digest}-{stamp}"
        self._issued.add(handle)
        shape = _Shape(definition, handle, table, predicate, chunk_rows)
        shape.snapshot(self.txid + 1)
        return shape
