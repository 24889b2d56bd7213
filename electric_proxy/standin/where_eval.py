"""Evaluate Electric shape `where` clauses against in-memory rows, the way the sync service does.

The fake upstream (`upstream.py`) needs to filter rows exactly like Electric so that proxy tests
observe real shape semantics: which rows a shape contains, when an update moves a row in or out,
and which clauses Electric refuses (and with which `At location N: ...` message). Electric parses
`SELECT 1 WHERE <clause>` with libpg_query and walks an allow-listed AST; `pglast` wraps the same
parser, so this module does the same walk and compiles the tree into closures once per shape.

Values follow Postgres semantics: untyped literals and `$n` parameters take their type from the
expression they meet (a parameter compared with an `int8` column becomes an integer), and NULL
propagates through SQL three-valued logic (`None` stands for UNKNOWN).

This module keeps the entry points; the evaluator lives in private modules beside it:
`_where_types` (type names and value codecs), `_where_logic` (three-valued logic, operator
implementations), `_where_expr` (typed sub-expressions, implicit casts), `_where_operators`
(operator overloads, `A_Expr` nodes) and `_where_compile` (the tree walk).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from pglast import ast, enums
from pglast.stream import RawStream

from ._where_compile import _Compiler, _const_locations, _parse_select
from ._where_expr import _PREFIX, Evaluator, Row, WhereError, _at, _identifier, _names
from ._where_types import (
    CASTABLE_TYPES,
    FLOAT_TYPES,
    INT_TYPES,
    NUMERIC_TYPES,
    TEMPORAL_TYPES,
    TEXT_TYPES,
    UNKNOWN,
    coerce,
    normalize_type,
    parse_text,
    to_text,
)

__all__ = [
    "CASTABLE_TYPES",
    "FLOAT_TYPES",
    "INT_TYPES",
    "NUMERIC_TYPES",
    "TEMPORAL_TYPES",
    "TEXT_TYPES",
    "UNKNOWN",
    "CompiledWhere",
    "Evaluator",
    "Row",
    "WhereError",
    "coerce",
    "compile_order_by",
    "compile_where",
    "normalize_type",
    "parse_text",
    "to_text",
]


@dataclass(frozen=True)
class CompiledWhere:
    """A shape's where clause, parsed and type-checked once, ready to test rows."""

    sql: str
    _fn: Evaluator

    def matches(self, row: Row) -> bool:
        """Only TRUE selects a row: FALSE and UNKNOWN (NULL) both leave it out."""
        return self._fn(row) is True


def compile_where(
    clause: str, columns: Mapping[str, str], params: Mapping[str, str] | None = None
) -> CompiledWhere:
    """Parse and type-check `clause` against the table's columns, like `Shape.new/2` does.

    `columns` maps every column name to its (normalised) Postgres type; Electric resolves
    references against all table columns, not only the selected ones. Raises `WhereError`
    with Electric's wording for anything Electric would reject.
    """
    given = dict(params or {})
    stmt = _parse_select(_PREFIX + clause)
    if (
        not isinstance(stmt, ast.SelectStmt)
        or stmt.whereClause is None
        or any(
            (
                stmt.fromClause,
                stmt.windowClause,
                stmt.groupClause,
                stmt.sortClause,
                stmt.lockingClause,
            )
        )
    ):
        raise WhereError("malformed query ending with SQL clauses")
    compiler = _Compiler(columns, given, _const_locations(_PREFIX + clause, stmt))
    expr = compiler.compile(stmt.whereClause)
    unused = sorted(int(key) for key in given if key.isdigit() and int(key) not in compiler.used)
    if unused:
        raise WhereError(f"At location 0: parameter value for ${unused[0]} was not used")
    if expr.type == UNKNOWN and expr.literal is not None:
        expr = compiler.coerce_to(expr, "text")
    if expr.type != "bool":
        raise WhereError("WHERE clause must return a boolean")
    return CompiledWhere(sql=str(RawStream()(stmt.whereClause)), _fn=expr.fn)


def compile_order_by(
    clause: str, columns: Mapping[str, str]
) -> Callable[[Sequence[Row]], list[Row]]:
    """Compile a subset `order_by` (plain columns, ASC/DESC, NULLS FIRST/LAST) into a sorter."""
    stmt = _parse_select("SELECT 1 ORDER BY " + clause)
    keys: list[tuple[str, bool, bool]] = []
    for sort_by in stmt.sortClause or ():
        node = sort_by.node
        if isinstance(node, ast.A_Const):
            continue
        if isinstance(node, ast.ParamRef):
            raise _at(node, f"parameter ${node.number} is not supported in ORDER BY clauses")
        if not isinstance(node, ast.ColumnRef):
            raise _at(
                node, f"{type(node).__name__} expressions are not allowed in ORDER BY clauses"
            )
        parts = _names(node.fields)
        if len(parts) != 1 or parts[0] not in columns:
            raise _at(node, f"unknown reference {_identifier(parts)}")
        descending = sort_by.sortby_dir == enums.SortByDir.SORTBY_DESC
        nulls = sort_by.sortby_nulls
        nulls_first = (
            descending
            if nulls == enums.SortByNulls.SORTBY_NULLS_DEFAULT
            else nulls == enums.SortByNulls.SORTBY_NULLS_FIRST
        )
        keys.append((parts[0], descending, nulls_first))

    def compare(a: Row, b: Row) -> int:
        for name, descending, nulls_first in keys:
            x, y = cast(Any, a.get(name)), cast(Any, b.get(name))
            if x is None or y is None:
                if x is None and y is None:
                    continue
                return (-1 if x is None else 1) * (1 if nulls_first else -1)
            if x != y:
                return (-1 if x < y else 1) * (-1 if descending else 1)
        return 0

    def sort(rows: Sequence[Row]) -> list[Row]:
        return sorted(rows, key=functools.cmp_to_key(compare))

    return sort
