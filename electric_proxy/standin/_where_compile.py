"""The where compiler: one walk over the pglast tree that type-checks and builds closures.

Electric accepts only an allow-listed set of node types and reports anything else with the
node's name and position; the compiler does the same, so a clause the fake accepts is one
Electric accepts and the closures it returns are evaluated per row without further checks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError, parse_sql_json

from ._where_expr import (
    Row,
    WhereError,
    _at,
    _Expr,
    _identifier,
    _in_clause,
    _location,
    _names,
)
from ._where_logic import _and, _not, _or
from ._where_operators import _OperatorCompiler
from ._where_types import CASTABLE_TYPES, UNKNOWN, _convert, _family, parse_text


def _unqualified(names: list[str]) -> list[str]:
    """Type and function names as written, less a leading `pg_catalog.` (Postgres's default)."""
    return names[1:] if names and names[0] == "pg_catalog" else names


class _Compiler(_OperatorCompiler):
    """Walks the pglast tree once, resolving types, and returns closures over rows."""

    def __init__(
        self,
        columns: Mapping[str, str],
        params: Mapping[str, str],
        const_locations: Mapping[int, int],
    ) -> None:
        super().__init__()
        self.columns = columns
        self.params = params
        self.const_locations = const_locations
        self.used: set[int] = set()

    def compile(self, node: Any) -> _Expr:
        handler = getattr(self, f"_n_{type(node).__name__}", None)
        if isinstance(node, ast.SubLink):
            raise WhereError("Subqueries are not supported")
        if handler is None:
            raise _at(node, f"{type(node).__name__} is not supported in this context")
        return cast(_Expr, handler(node))

    def _n_A_Const(self, node: Any) -> _Expr:
        location = _in_clause(self.const_locations.get(id(node)))
        if node.isnull:
            return _Expr(lambda _row: None, UNKNOWN, location, literal=None)
        val = node.val
        if isinstance(val, ast.String):
            return _Expr(lambda _row: None, UNKNOWN, location, literal=str(val.sval))
        if isinstance(val, ast.Integer):
            number = int(val.ival or 0)
            kind = "int4" if -(2**31) <= number < 2**31 else "int8"
            return _Expr(lambda _row: number, kind, location, f"constant of type {kind}")
        if isinstance(val, ast.Float):
            text = str(val.fval)
            big = int(text) if text.isdigit() else None
            if big is not None:
                return _Expr(lambda _row: big, "int8", location, "constant of type int8")
            real = float(text)
            return _Expr(lambda _row: real, "numeric", location, "constant of type numeric")
        if isinstance(val, ast.Boolean):
            flag = bool(val.boolval)
            return _Expr(lambda _row: flag, "bool", location, "constant of type bool")
        raise _at(node, "BitString values are not supported")

    def _n_ColumnRef(self, node: Any) -> _Expr:
        parts = _names(node.fields)
        if len(parts) != len(node.fields):
            raise _at(node, "A_Star is not supported in this context")
        name = parts[0]
        if len(parts) != 1 or name not in self.columns:
            raise _at(node, f"unknown reference {_identifier(parts)}")
        pg_type = self.columns[name]
        return _Expr(
            lambda row: row.get(name),
            pg_type,
            _location(node),
            f"reference {_identifier(parts)} of type {pg_type}",
        )

    def _n_ParamRef(self, node: Any) -> _Expr:
        number = int(node.number)
        key = str(number)
        if key not in self.params:
            raise _at(node, f"parameter ${number} was not provided")
        self.used.add(number)
        expr = _Expr(
            lambda _row: None, UNKNOWN, _location(node), literal=self.params[key], param=number
        )
        known = self.param_types.get(number)
        return self.coerce_to(expr, known) if known else expr

    def _n_TypeCast(self, node: Any) -> _Expr:
        names = _unqualified(_names(node.typeName.names))
        base = names[-1] if names else ""
        target = base + ("[]" if node.typeName.arrayBounds else "")
        if base not in CASTABLE_TYPES or len(names) != 1:
            raise _at(node.typeName, f"unsupported type {_identifier(names)}")
        arg = self.compile(node.arg)
        if arg.type == UNKNOWN:
            if arg.literal is None or arg.param is not None:
                return self._resolve_literal(arg, target)
            try:
                value = parse_text(arg.literal, target)
            except (ValueError, IndexError) as exc:
                raise _at(
                    arg.location, f'could not cast value "{arg.literal}" from text to {target}'
                ) from exc
            return _Expr(lambda _row: value, target, arg.location, f"constant of type {target}")
        inner, source = arg.fn, arg.type

        def cast_value(row: Row) -> object:
            try:
                return _convert(inner(row), source, target)
            except (ValueError, TypeError, IndexError):
                return None

        return _Expr(
            cast_value, target, arg.location, f"function {source}_to_{target} returning {target}"
        )

    def _n_BoolExpr(self, node: Any) -> _Expr:
        args = [self.as_bool(self.compile(arg)) for arg in node.args]
        fns = [arg.fn for arg in args]
        location = _location(node)
        if node.boolop == enums.BoolExprType.NOT_EXPR:
            only = fns[0]
            return _Expr(
                lambda row: _not(only(row)), "bool", location, "function not returning bool"
            )
        combine = _and if node.boolop == enums.BoolExprType.AND_EXPR else _or
        name = "and" if combine is _and else "or"
        return _Expr(
            lambda row: combine(fn(row) for fn in fns),
            "bool",
            location,
            f"function {name} returning bool",
        )

    def _n_NullTest(self, node: Any) -> _Expr:
        if node.argisrow:
            raise _at(node, "NullTest is not supported in this context")
        inner = self.compile(node.arg).fn
        want_null = node.nulltesttype == enums.NullTestType.IS_NULL
        return _Expr(
            lambda row: (inner(row) is None) == want_null,
            "bool",
            _location(node),
            "function IS_NULL returning bool",
        )

    def _n_BooleanTest(self, node: Any) -> _Expr:
        arg = self.compile(node.arg)
        test = enums.BoolTestType(node.booltesttype)
        if arg.type not in ("bool", UNKNOWN):
            words = test.name.replace("_", " ")
            raise _at(node, f"argument of {words} must be bool, not {arg.type}")
        inner = self.coerce_to(arg, "bool").fn
        expected = {"TRUE": True, "FALSE": False, "UNKNOWN": None}[test.name.split("_")[-1]]
        negate = "_NOT_" in test.name
        return _Expr(
            lambda row: (inner(row) is expected) != negate,
            "bool",
            _location(node),
            f"function {test.name} returning bool",
        )

    def _n_FuncCall(self, node: Any) -> _Expr:
        names = _unqualified(_names(node.funcname))
        if (
            node.agg_order
            or node.agg_filter is not None
            or node.over is not None
            or node.agg_within_group
            or node.agg_star
            or node.agg_distinct
        ):
            raise _at(node, "aggregation is not supported in this context")
        args = [self.compile(arg) for arg in node.args or ()]
        name = _identifier(names)
        if name in ("lower", "upper") and len(args) == 1:
            arg = args[0]
            if arg.type != UNKNOWN and _family(arg.type) != "text":
                raise _at(node, f"Could not select a function overload for {name}({arg.type})")
            inner = self.coerce_to(arg, "text").fn
            method = str.lower if name == "lower" else str.upper
            return _Expr(
                lambda row: None if (v := inner(row)) is None else method(cast(str, v)),
                "text",
                _location(node),
                f"function {name} returning text",
            )
        raise _at(node, f"unknown or unsupported function {name}/{len(args)}")

    def _n_CoalesceExpr(self, node: Any) -> _Expr:
        location = _location(node)
        args = self.unify([self.compile(arg) for arg in node.args], location)
        fns = [arg.fn for arg in args]

        def first_non_null(row: Row) -> object:
            return next((value for fn in fns if (value := fn(row)) is not None), None)

        return _Expr(
            first_non_null, args[0].type, location, f"function coalesce returning {args[0].type}"
        )

    def _n_MinMaxExpr(self, node: Any) -> _Expr:
        location = _location(node)
        args = self.unify([self.compile(arg) for arg in node.args], location)
        fns = [arg.fn for arg in args]
        pick = max if node.op == enums.MinMaxOp.IS_GREATEST else min

        def extreme(row: Row) -> object:
            values = [value for fn in fns if (value := fn(row)) is not None]
            return pick(cast(list[Any], values)) if values else None

        return _Expr(
            extreme, args[0].type, location, f"function {pick.__name__} returning {args[0].type}"
        )

    def _n_A_ArrayExpr(self, node: Any) -> _Expr:
        location = _location(node)
        elements = self.unify([self.compile(item) for item in node.elements or ()], location)
        fns = [element.fn for element in elements]
        element_type = elements[0].type if elements else "text"
        return _Expr(
            lambda row: [fn(row) for fn in fns],
            element_type + "[]",
            location,
            f"array of {element_type}",
        )


def _parse_select(sql: str) -> Any:
    try:
        statements = parse_sql(sql)
    except ParseError as exc:
        message, index = [*exc.args, None, None][:2]
        position = int(index) + 1 if isinstance(index, int) else len(sql)
        raise WhereError(f"At location {position}: {message}") from exc
    if len(statements) != 1:
        raise WhereError('unescaped ";" causing statement split')
    stmt: Any = statements[0].stmt
    return stmt


def _const_locations(sql: str, stmt: Any) -> dict[int, int]:
    """Where each literal sits in `sql`, keyed by the `id()` of its `A_Const` node.

    pglast's Python nodes drop `A_Const.location`, which Electric quotes in its errors; the
    JSON parse tree keeps it, so the two trees are walked in step to recover it.
    """
    found: dict[int, int] = {}

    def walk(node: Any, data: Any) -> None:
        if isinstance(node, tuple) and isinstance(data, list):
            for child, child_data in zip(node, data, strict=False):
                walk(child, child_data)
        elif isinstance(node, ast.Node) and isinstance(data, dict):
            body = data.get(type(node).__name__, data)
            if isinstance(node, ast.A_Const) and isinstance(body.get("location"), int):
                found[id(node)] = body["location"]
            for name in node:
                if name in body:
                    walk(getattr(node, name), body[name])

    walk(stmt, json.loads(parse_sql_json(sql))["stmts"][0]["stmt"])
    return found
