"""Compiled sub-expressions and Postgres's implicit typing of them.

Electric type-checks a clause before accepting it, and its error messages name the types and
the character position involved, so the compiler carries both with every sub-expression. Untyped
literals and `$n` parameters stay `UNKNOWN` until the expression they meet fixes their type;
`_TypeResolver` does that resolution and the implicit conversions inside a type family.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pglast import ast

from ._where_types import FLOAT_TYPES, UNKNOWN, _convert, _element_type, _family, parse_text

Row = Mapping[str, object]
Evaluator = Callable[[Row], object]

#: Clauses are parsed as `SELECT 1 WHERE <clause>`; positions are reported within the clause.
_PREFIX: Final = "SELECT 1 WHERE "


class WhereError(ValueError):
    """A clause Electric would refuse; the message is the text Electric puts in `errors.where`."""


@dataclass(frozen=True)
class _Expr:
    """A compiled sub-expression: how to compute it, and the Postgres type it has."""

    fn: Evaluator
    type: str
    location: int
    describe: str = ""
    literal: str | None = None
    param: int | None = None


def _identifier(parts: Sequence[str]) -> str:
    return ".".join(
        part if re.fullmatch(r"[a-z_][a-z0-9_]*", part) else '"' + part.replace('"', '""') + '"'
        for part in parts
    )


def _in_clause(raw: object) -> int:
    """A parser position made relative to the caller's clause (0 when the parser has none)."""
    return max(raw - len(_PREFIX), 0) if isinstance(raw, int) else 0


def _location(node: Any) -> int:
    return _in_clause(getattr(node, "location", None))


def _at(node_or_location: Any, message: str) -> WhereError:
    location = (
        node_or_location if isinstance(node_or_location, int) else _location(node_or_location)
    )
    return WhereError(f"At location {location}: {message}")


def _names(nodes: Iterable[Any] | None) -> list[str]:
    return [str(node.sval) for node in nodes or () if isinstance(node, ast.String)]


def _common_type(types: Sequence[str], location: int) -> str:
    """The type Postgres would bring all of `types` to (`text` when none is known yet)."""
    typed = [pg_type for pg_type in types if pg_type != UNKNOWN]
    if not typed:
        return "text"
    first = typed[0]
    if any(_family(other) != _family(first) for other in typed):
        raise _at(location, "Could not select an operator overload")
    if all(other == first for other in typed):
        return first
    family = _family(first)
    if family.endswith("[]"):
        return _common_type([_element_type(t) for t in typed], location) + "[]"
    if family == "numeric":
        floats = [t for t in typed if t in FLOAT_TYPES]
        return ("numeric" if "numeric" in floats else "float8") if floats else "int8"
    if family == "temporal":
        return "timestamptz" if "timestamptz" in typed else "timestamp"
    return "text" if family == "text" else first


class _TypeResolver:
    """Gives expressions the type their context asks for, as Postgres's implicit casts do.

    A `$n` takes the type of its first use; a later use needing another type is an error, so
    the types chosen so far are kept for the whole clause.
    """

    def __init__(self) -> None:
        self.param_types: dict[int, str] = {}

    def coerce_to(self, expr: _Expr, target: str) -> _Expr:
        if expr.type == target:
            return expr
        if expr.type == UNKNOWN:
            return self._resolve_literal(expr, target)
        if _family(expr.type) != _family(target):
            raise _at(expr.location, f"{expr.type} cannot be matched to {target}")
        inner, source = expr.fn, expr.type
        return _Expr(
            lambda row: _convert(inner(row), source, target), target, expr.location, expr.describe
        )

    def _resolve_literal(self, expr: _Expr, target: str) -> _Expr:
        if expr.param is not None:
            known = self.param_types.setdefault(expr.param, target)
            if known != target:
                raise _at(expr.location, f"type conflict for ${expr.param}: {target} and {known}")
        if expr.literal is None:
            value: object = None
        else:
            try:
                value = parse_text(expr.literal, target)
            except (ValueError, IndexError) as exc:
                message = f"invalid syntax for type {target}: {expr.literal}"
                raise _at(expr.location, message) from exc
        return _Expr(lambda _row: value, target, expr.location, f"constant of type {target}")

    def unify(self, exprs: Sequence[_Expr], location: int) -> list[_Expr]:
        target = _common_type([expr.type for expr in exprs], location)
        return [self.coerce_to(expr, target) for expr in exprs]

    def as_bool(self, expr: _Expr) -> _Expr:
        if expr.type == "bool" or expr.type == UNKNOWN:
            return self.coerce_to(expr, "bool")
        raise _at(expr.location, f"{expr.describe or expr.type} is not castable to bool")
