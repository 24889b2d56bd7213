"""The client's ``subset__order_by``: bare column names with a direction, nothing else."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, Final

from pglast import ast
from pglast.enums import SortByDir

from ._errors import WhereError, _capture, _Rejected, _Rejection, _unwrap
from ._limits import DEFAULT_LIMITS, Limits
from ._text import _check_lexemes, _check_text, _column_set, _node_position, _parse_clause
from ._tree import _deparse

_ORDER_PREFIX: Final = "SELECT 1 ORDER BY "


@functools.lru_cache(maxsize=1024)
def _parse_order_cached(
    text: str, columns: frozenset[str] | None, limits: Limits
) -> str | _Rejection:
    return _capture(_parse_order, text, columns, limits)


def _parse_order(text: str, columns: frozenset[str] | None, limits: Limits) -> str:
    text = _check_text(text, limits.max_length)
    offset = len(_ORDER_PREFIX)
    items = _parse_clause(_ORDER_PREFIX, text, "sortClause", _check_lexemes)
    if len(items) > limits.max_nodes:
        raise _Rejected(f"has more than {limits.max_nodes} sort keys")
    for item in items:
        expression = item.node
        position = _node_position(expression, offset, None)
        if isinstance(expression, ast.ParamRef):
            raise _Rejected("parameters are not allowed in ORDER BY", position)
        if isinstance(expression, ast.A_Const):
            raise _Rejected("constants are not allowed in ORDER BY", position)
        if not isinstance(expression, ast.ColumnRef):
            raise _Rejected("only column names are allowed in ORDER BY", position)
        fields: tuple[Any, ...] = expression.fields or ()
        if len(fields) != 1 or not isinstance(fields[0], ast.String):
            raise _Rejected("only bare column names are allowed in ORDER BY", position)
        if columns is not None and fields[0].sval not in columns:
            raise _Rejected(f'column "{fields[0].sval}" is not allowed', position)
        if item.sortby_dir == SortByDir.SORTBY_USING or item.useOp:
            raise _Rejected("ORDER BY ... USING is not allowed", position)
    sql = ", ".join(_deparse(item) for item in items)
    if _parse_clause(_ORDER_PREFIX, sql, "sortClause") != items:
        raise _Rejected("could not be normalised")
    return sql


def parse_order_by(
    text: str,
    *,
    columns: Iterable[str] | None,
    limits: Limits = DEFAULT_LIMITS,
    field: str = "subset__order_by",
) -> str:
    """Validate ``subset__order_by`` and return it normalised.

    Only bare column names with ASC/DESC and NULLS FIRST/LAST are accepted: an ordering is
    an oracle over the rows it sorts, so it gets the same column restriction as a filter,
    and constants (``ORDER BY 1``) are refused because their meaning is positional.
    """
    allowed = _column_set(columns)
    if not isinstance(text, str):
        raise WhereError("must be a string", field=field)
    return _unwrap(_parse_order_cached(text, allowed, limits), field)
