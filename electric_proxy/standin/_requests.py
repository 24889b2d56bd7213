"""Turning a `/v1/shape` request's parameters into a validated shape request, or a 400.

Electric's `Api.Params.validate/2` decides which requests reach a shape and, for the rest,
the exact `errors` a client sees; the proxy's tests assert on both, so the checks run in
Electric's order with Electric's wording.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ._protocol import (
    BEFORE_ALL,
    Offset,
    _cast_bool,
    _cast_int,
    _parse_identifier,
    _parse_relation,
    _quote,
    _split_unquoted,
    format_offset,
    parse_offset,
)
from ._shapes import _ShapeDef, _Table
from .where_eval import CompiledWhere, Row, WhereError, compile_order_by, compile_where

#: The parameters read as text, in the order Electric's changeset casts them.
_TEXT_PARAMS = (
    "table", "offset", "handle", "where", "columns", "queryable_columns", "replica", "log",
)  # fmt: skip
#: Parameters that are column lists: a JSON body may send them as arrays.
_COLUMN_LISTS = frozenset({"columns", "queryable_columns"})


@dataclass
class _Subset:
    """A subset snapshot request (§7.2): filter, order and page over the shape's current rows."""

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


class _RequestValidator:
    """Validates requests against the fake's tables (shared, so tables added later count).

    Every request of a client's sync loop repeats its shape's where clause, so a compiled
    clause is kept per table, clause and parameters instead of being parsed again each time.
    """

    def __init__(self, tables: Mapping[tuple[str, str], _Table]) -> None:
        self._tables = tables
        self._where_cache: dict[tuple[object, ...], CompiledWhere] = {}

    def validate(self, params: Mapping[str, object]) -> _ShapeRequest | _Rejection:
        """`Api.Params.validate/2`: the same checks, in the same order, with Electric's words."""
        problem = _Rejection()
        text: dict[str, str | None] = {}
        for name in _TEXT_PARAMS:
            value = params.get(name)
            if isinstance(value, list) and name in _COLUMN_LISTS and value:
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
        columns = _column_list(text, "columns", problem)
        queryable = _column_list(text, "queryable_columns", problem)
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
        if queryable is not None and not _check_queryable(table, queryable, problem):
            return problem
        selected = _select_columns(table, columns, queryable, problem)
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
            # Electric checks subsets against the queryable columns only (`Subset.new/3`).
            types = table.types
            if queryable is not None:
                types = {name: kind for name, kind in types.items() if name in queryable}
            subset = _validate_subset(params["subset"], types, problem)
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

    def _compile_shape_where(
        self, table: _Table, where: str, given: dict[str, str], problem: _Rejection
    ) -> CompiledWhere | None:
        if not _check_param_keys(given, problem, "params"):
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


def _column_list(
    text: Mapping[str, str | None], name: str, problem: _Rejection
) -> list[str] | None:
    """A ``columns``-style list (``id,"Due Date"``) as names, like Electric's `ColumnList`."""
    raw = text.get(name)
    if not raw:
        return None
    names = []
    for part in _split_unquoted(raw, ","):
        column_name, error = _parse_identifier(part)
        if column_name is None:
            problem.add(name, error or "is invalid")
            return None
        names.append(column_name)
    return names


def _check_queryable(table: _Table, queryable: list[str], problem: _Rejection) -> bool:
    """`Shape.validate_queryable_columns/3`: every primary key listed, every name a column.

    Checked before ``columns``, since the projection may only use these names
    (GHSA-c82q-v86f-c87f: a client must not filter or select on what it may not see).
    """
    missing_pk = [name for name in table.pk if name not in queryable]
    unknown = [name for name in queryable if name not in table.types]
    if missing_pk and any(c.primary_key for c in table.columns):
        problem.add(
            "queryable_columns",
            "The list of queryable columns must include all primary key columns, missing: "
            + ", ".join(missing_pk),
        )
    elif unknown:
        problem.add(
            "queryable_columns",
            "The following queryable columns are not found on the table: " + ", ".join(unknown),
        )
    else:
        return True
    return False


def _select_columns(
    table: _Table, columns: list[str] | None, queryable: list[str] | None, problem: _Rejection
) -> list[str] | None:
    if columns is None:
        # Without a projection Electric syncs the queryable columns, or all of them.
        return sorted(queryable if queryable is not None else table.types)
    selectable = queryable if queryable is not None else table.types
    missing_pk = [name for name in table.pk if name not in columns]
    unknown = [name for name in columns if name not in selectable]
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


def _check_param_keys(given: Mapping[str, str], problem: _Rejection, key: str) -> bool:
    if not all(re.fullmatch(r"\d+", name) for name in given):
        problem.add(key, "Parameters can only use numbers as keys")
        return False
    if sorted(int(name) for name in given) != list(range(1, len(given) + 1)):
        problem.add(key, "Parameters must be numbered sequentially, starting from 1")
        return False
    return True


def _validate_subset(raw: object, types: Mapping[str, str], problem: _Rejection) -> _Subset | None:
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
    given = _subset_params(values.get("params"), inner)
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
        and _check_param_keys(given, inner, "params")
    ):
        try:
            where = compile_where(str(values["where"]), types, given)
        except WhereError as exc:
            inner.add("where", str(exc))
    if not inner.errors and isinstance(order_text, str):
        try:
            order = compile_order_by(order_text, types)
        except WhereError as exc:
            inner.add("order_by", str(exc))
    if inner.errors:
        problem.errors["subset"] = inner.errors
        return None
    return _Subset(where=where, order=order, limit=limit, offset=offset)


def _subset_params(raw: object, inner: _Rejection) -> dict[str, str]:
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
