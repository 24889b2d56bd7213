"""Operators: choosing an overload for the operand types, and compiling `A_Expr` nodes.

Postgres resolves an operator from its operands' types, and Electric reports a failed
resolution with a fixed wording ("Could not select an operator overload"), so the choice is
made here at compile time; the row-time behaviour lives in `_where_logic`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

from pglast import enums

from ._where_expr import (
    Row,
    _at,
    _common_type,
    _Expr,
    _identifier,
    _location,
    _names,
    _TypeResolver,
)
from ._where_logic import (
    _ARITHMETIC,
    _ARRAY_OPS,
    _COMPARISONS,
    _LIKES,
    _and,
    _like,
    _not,
    _or,
    _strict,
)
from ._where_types import UNKNOWN, _element_type, _family, to_text


def _operator(
    name: str, left: str, right: str, location: int
) -> tuple[Callable[[object, object], object], str, str, str]:
    """Pick an operator overload for two operand types: (impl, left, right, result)."""
    if name in _COMPARISONS:
        target = _common_type((left, right), location)
        return _strict(_COMPARISONS[name]), target, target, "bool"
    if name in _LIKES:
        for side in (left, right):
            if side != UNKNOWN and _family(side) != "text":
                raise _at(location, "Could not select an operator overload")
        return _like(*_LIKES[name]), "text", "text", "bool"
    if name in _ARITHMETIC:
        typed = [side for side in (left, right) if side != UNKNOWN]
        if not typed or any(_family(side) != "numeric" for side in typed):
            raise _at(location, "Could not select an operator overload")
        target = _common_type(typed, location)
        return _strict(_ARITHMETIC[name]), target, target, target
    if name == "||":
        if left.endswith("[]") or right.endswith("[]"):
            target = left if left.endswith("[]") else right
            return _strict(lambda a, b: [*a, *b]), target, target, target
        return _strict(lambda a, b: str(a) + str(b)), "text", "text", "text"
    if name in _ARRAY_OPS:
        target = left if left != UNKNOWN else right
        if not target.endswith("[]") or right not in (target, UNKNOWN):
            raise _at(location, "Could not select an operator overload")
        return _strict(_ARRAY_OPS[name]), target, target, "bool"
    raise _at(location, f"unknown binary operator {_identifier([name])}")


class _OperatorCompiler(_TypeResolver, abc.ABC):
    """The `A_Expr` half of the compiler: operators, IN, BETWEEN, IS DISTINCT FROM, ANY/ALL."""

    @abc.abstractmethod
    def compile(self, node: Any) -> _Expr:
        """Compile an operand; the subclass knows every other node type."""

    def binary(self, name: str, left: _Expr, right: _Expr, location: int) -> _Expr:
        impl, left_type, right_type, result = _operator(name, left.type, right.type, location)
        lfn = self._as_text_or(left, left_type).fn
        rfn = self._as_text_or(right, right_type).fn
        return _Expr(
            lambda row: impl(lfn(row), rfn(row)),
            result,
            location,
            f"operator {name} returning {result}",
        )

    def _as_text_or(self, expr: _Expr, target: str) -> _Expr:
        if target == "text" and expr.type not in (UNKNOWN, "text") and _family(expr.type) != "text":
            inner, source = expr.fn, expr.type
            return _Expr(lambda row: to_text(inner(row), source), "text", expr.location)
        return self.coerce_to(expr, target)

    def _n_A_Expr(self, node: Any) -> _Expr:
        kind = enums.A_Expr_Kind(node.kind)
        location = _location(node)
        name = _names(node.name)[-1] if node.name else ""
        handler = _A_EXPR_HANDLERS.get(kind.name)
        if handler is None:
            raise _at(
                node, f"expression {_identifier([name])} of :{kind.name} is not currently supported"
            )
        return handler(self, node, name, location)

    def a_op(self, node: Any, name: str, location: int) -> _Expr:
        if node.lexpr is None:
            operand = self.compile(node.rexpr)
            if name not in ("-", "+") or (
                operand.type != UNKNOWN and _family(operand.type) != "numeric"
            ):
                raise _at(location, f"unknown unary operator {_identifier([name])}")
            operand = operand if operand.type != UNKNOWN else self.coerce_to(operand, "numeric")
            inner = operand.fn
            sign = -1 if name == "-" else 1
            return _Expr(
                lambda row: None if (v := inner(row)) is None else sign * cast(float, v),
                operand.type,
                location,
                f"operator {name} returning {operand.type}",
            )
        return self.a_binary(node, name, location)

    def a_binary(self, node: Any, name: str, location: int) -> _Expr:
        return self.binary(name, self.compile(node.lexpr), self.compile(node.rexpr), location)

    def a_distinct(self, node: Any, name: str, location: int) -> _Expr:
        left, right = self.unify([self.compile(node.lexpr), self.compile(node.rexpr)], location)
        lfn, rfn = left.fn, right.fn
        distinct = enums.A_Expr_Kind(node.kind) == enums.A_Expr_Kind.AEXPR_DISTINCT
        return _Expr(
            lambda row: (lfn(row) != rfn(row)) == distinct,
            "bool",
            location,
            "function values_distinct returning bool",
        )

    def a_in(self, node: Any, name: str, location: int) -> _Expr:
        exprs = self.unify([self.compile(node.lexpr), *map(self.compile, node.rexpr)], location)
        probe, options = exprs[0].fn, [expr.fn for expr in exprs[1:]]
        negate = name == "<>"

        def member(row: Row) -> object:
            value = probe(row)
            found = _or(
                None if value is None or (opt := fn(row)) is None else value == opt
                for fn in options
            )
            return _not(found) if negate else found

        return _Expr(member, "bool", location, "function in returning bool")

    def a_between(self, node: Any, name: str, location: int) -> _Expr:
        value, low, high = self.unify(
            [self.compile(node.lexpr), *map(self.compile, node.rexpr)], location
        )
        vfn, lfn, hfn = value.fn, low.fn, high.fn
        kind = enums.A_Expr_Kind(node.kind).name
        symmetric = kind.endswith("_SYM")
        negate = "NOT" in kind
        le = _strict(_COMPARISONS["<="])

        def between(row: Row) -> object:
            v, lo, hi = vfn(row), lfn(row), hfn(row)
            result = _and((le(lo, v), le(v, hi)))
            if symmetric:
                result = _or((result, _and((le(hi, v), le(v, lo)))))
            return _not(result) if negate else result

        return _Expr(between, "bool", location, "function between returning bool")

    def a_any_all(self, node: Any, name: str, location: int) -> _Expr:
        left = self.compile(node.lexpr)
        array = self.compile(node.rexpr)
        if array.type != UNKNOWN and not array.type.endswith("[]"):
            raise _at(array.location, "argument of ANY must be an array")
        element = _element_type(array.type) if array.type != UNKNOWN else UNKNOWN
        impl, left_type, element_type, result = _operator(name, left.type, element, location)
        if result != "bool":
            raise _at(location, "ANY/ALL requires operator that returns bool")
        lfn = self.coerce_to(left, left_type).fn
        afn = self.coerce_to(array, element_type + "[]").fn
        combine = _or if enums.A_Expr_Kind(node.kind) == enums.A_Expr_Kind.AEXPR_OP_ANY else _and

        def quantified(row: Row) -> object:
            items = afn(row)
            if items is None:
                return None
            value = lfn(row)
            return combine(impl(value, item) for item in cast(list[object], items))

        return _Expr(quantified, "bool", location, "function any returning bool")


_A_EXPR_HANDLERS: Final[Mapping[str, Callable[[_OperatorCompiler, Any, str, int], _Expr]]] = {
    "AEXPR_OP": _OperatorCompiler.a_op,
    "AEXPR_LIKE": _OperatorCompiler.a_binary,
    "AEXPR_ILIKE": _OperatorCompiler.a_binary,
    "AEXPR_IN": _OperatorCompiler.a_in,
    "AEXPR_DISTINCT": _OperatorCompiler.a_distinct,
    "AEXPR_NOT_DISTINCT": _OperatorCompiler.a_distinct,
    "AEXPR_BETWEEN": _OperatorCompiler.a_between,
    "AEXPR_NOT_BETWEEN": _OperatorCompiler.a_between,
    "AEXPR_BETWEEN_SYM": _OperatorCompiler.a_between,
    "AEXPR_NOT_BETWEEN_SYM": _OperatorCompiler.a_between,
    "AEXPR_OP_ANY": _OperatorCompiler.a_any_all,
    "AEXPR_OP_ALL": _OperatorCompiler.a_any_all,
}
