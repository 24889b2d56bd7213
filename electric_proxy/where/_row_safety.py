"""Leakproof mode: everything Postgres may run per row is something Postgres marks leakproof.

Why. Postgres promises no evaluation order inside ``server AND client``: the planner orders
quals by cost and may run the client's part on rows the server's part would reject. If that
part can raise an error, whether the request fails says something about rows of another
tenant (measured: a LIKE pattern ending in the escape character fails only on rows that
match the pattern's prefix, so a title can be read out one character per request).

Postgres has a rule for exactly this: a function is ``LEAKPROOF`` (``pg_proc.proleakproof``)
when it reveals nothing about its arguments except through its result, and only such quals
are pushed below a security-barrier view or row-level security. This module applies that
rule to client filters, with the catalogue as the judge (:mod:`._leakproof`, generated from
a real server by ``scripts/leakproof_table.py``):

* a column may only reach an operator, function or cast whose resolution, for the column's
  declared type, runs leakproof functions only; an untyped column (a policy's plain list of
  names) may only be tested with ``IS [NOT] NULL``, ``IS [NOT] TRUE/FALSE/UNKNOWN`` or used
  bare as a condition, which run no function at all;
* constants must be parse-time constants (literals, ``$n``, a cast applied directly to a
  literal, ``ARRAY[...]`` of those), whose errors, if any, end the whole statement before a
  row is read; casts of parameters and arithmetic on constants are refused too, since some
  (``text`` to ``date``, anything ``timestamptz``) are stable, are not folded, and then run
  once per row that reaches them;
* ``AND``/``OR``/``NOT``, null and boolean tests, ``ARRAY[...]``, ``COALESCE`` and array
  subscripts are structural: Postgres's own check (``contain_leaked_vars``) lets them pass.

One exception beyond the catalogue, argued here: ``LIKE``/``ILIKE``/``NOT LIKE``/``NOT ILIKE``
(also written as ``like()``/``ilike()`` or ``LIKE ANY(ARRAY[...])``) on a text or varchar
value, with a constant pattern (a string literal or ``$n``). ``textlike`` and friends are
not marked leakproof, but their only error that depends on the values is "LIKE pattern must
not end with escape character", and the pattern is a constant the proxy sees: a literal is
checked here, a ``$n`` is recorded in :attr:`RowSafety.like_params` and its value is checked
per request by ``check_params``. A pattern is refused when it ends in an odd number of
backslashes (``LIKE ... ESCAPE`` is refused by the grammar, so the escape is always ``\\``).
Assumptions, stated because they are not checked: the columns' collations are deterministic
(LIKE on a nondeterministic collation raises on the first row it sees), and the database
encoding and locale agree (ILIKE lower-cases through the locale). Validating the pattern also
closes a planner path: selectivity estimation runs the LIKE operator on the column's
most-common values and histogram, which hold other tenants' values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from pglast import ast
from pglast.enums import A_Expr_Kind

from ._errors import _Rejected
from ._leakproof import (
    FALLIBLE_OPERATORS,
    LEAKPROOF_CASTS,
    LEAKPROOF_FUNCTIONS,
    LEAKPROOF_OPERATORS,
)
from ._text import _node_position
from ._types import TEXT_TYPES, canonical_type

_LIKE_OPS: Final = frozenset({"~~", "~~*", "!~~", "!~~*"})
_LIKE_FUNCTIONS: Final = frozenset({"like", "ilike"})
_INT64: Final = 1 << 63
_NOT_LEAKPROOF: Final = (
    "Postgres does not mark it leakproof, so it could fail on other tenants' rows"
)

Kind = Literal["column", "unknown", "literal", "constant", "computed"]


@dataclass(frozen=True)
class _Value:
    """What the checker knows about a subexpression.

    ``kind``: ``column`` (a column reference), ``unknown`` (a string literal, ``$n`` or NULL:
    Postgres gives it the type its context wants), ``literal`` (an integer, decimal or boolean
    literal, typed by itself), ``constant`` (a cast literal or ``ARRAY[...]`` of constants,
    fixed before any row is read), ``computed`` (evaluated per row by leakproof code).
    ``type`` is None for unknown-typed values and for columns the policy did not type.
    """

    kind: Kind
    type: str | None = None
    name: str = ""

    @property
    def per_row(self) -> bool:
        return self.kind in ("column", "computed")


_BOOL: Final = _Value("computed", "bool")


def like_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` would make LIKE raise on some rows and not others, or None.

    Backslashes pair up from the left (``\\\\`` is one literal backslash), so a pattern raises
    "must not end with escape character" exactly when it ends in an odd run of them.
    """
    trailing = len(pattern) - len(pattern.rstrip("\\"))
    if trailing % 2:
        return (
            "a LIKE pattern must not end with the escape character '\\' "
            "(write '\\\\' for a literal backslash)"
        )
    return None


def _undeclared(name: str) -> str:
    return (
        f'column "{name}" has no declared type, so it may only be tested with IS [NOT] NULL; '
        f'declare its type to compare it, e.g. filter_columns = {{ {name} = "text" }}'
    )


def _literal_text(node: Any) -> str:
    value = node.val
    if isinstance(value, ast.Integer):
        return str(value.ival)
    if isinstance(value, ast.Float):
        return str(value.fval)
    return "true" if getattr(value, "boolval", False) else "false"


class RowSafety:
    """The leakproof walk, run after the grammar check on a tree it has already bounded."""

    def __init__(self, columns: dict[str, str | None], offset: int) -> None:
        self.columns = columns
        self.offset = offset
        self.like_params: set[int] = set()

    def _position(self, node: Any, fallback: int | None) -> int | None:
        return _node_position(node, self.offset, fallback)

    def condition(self, node: Any, fallback: int | None = None) -> None:
        """A boolean position: a bare column is fine (no function runs on it)."""
        if isinstance(node, ast.ColumnRef):
            return
        self.value(node, fallback)

    def value(self, node: Any, fallback: int | None) -> _Value:
        position = self._position(node, fallback)
        if isinstance(node, ast.A_Const):
            return self._constant(node)
        if isinstance(node, ast.ParamRef):
            return _Value("unknown")
        if isinstance(node, ast.ColumnRef):
            fields: tuple[Any, ...] = node.fields or ()
            name = str(fields[0].sval)
            return _Value("column", self.columns.get(name), name)
        if isinstance(node, ast.BoolExpr):
            for argument in node.args or ():
                self.condition(argument, position)
            return _BOOL
        if isinstance(node, ast.NullTest | ast.BooleanTest):
            self.condition(node.arg, position)
            return _BOOL
        if isinstance(node, ast.TypeCast):
            return self._cast(node, position)
        if isinstance(node, ast.A_Expr):
            return self._a_expr(node, position)
        if isinstance(node, ast.FuncCall):
            return self._function(node, position)
        if isinstance(node, ast.A_ArrayExpr):
            return self._array(node.elements or (), position)
        if isinstance(node, ast.CoalesceExpr):
            values = [self.value(argument, position) for argument in node.args or ()]
            return self._common(values, "COALESCE", position)
        if isinstance(node, ast.A_Indirection):
            return self._subscript(node, position)
        if isinstance(node, ast.MinMaxExpr):
            raise _Rejected(
                "GREATEST/LEAST are not allowed in leakproof mode; compare the columns directly",
                position,
            )
        if isinstance(node, ast.RowExpr):
            raise _Rejected(
                "a row value is only allowed on both sides of = or <> in leakproof mode", position
            )
        raise _Rejected(f"{type(node).__name__} is not allowed in leakproof mode", position)

    @staticmethod
    def _constant(node: Any) -> _Value:
        if node.isnull or isinstance(node.val, ast.String):
            return _Value("unknown")
        if isinstance(node.val, ast.Boolean):
            return _Value("literal", "bool")
        if isinstance(node.val, ast.Integer):
            return _Value("literal", "int4")
        text = str(node.val.fval)
        if text.isdigit() and int(text) < _INT64:
            return _Value("literal", "int8")
        return _Value("literal", "numeric")

    def _column_type(self, value: _Value, position: int | None) -> str | None:
        if value.kind == "column" and value.type is None:
            raise _Rejected(_undeclared(value.name), position)
        return value.type

    def _operator(self, operator: str, left: _Value, right: _Value, position: int | None) -> _Value:
        """Resolve ``left operator right`` as Postgres would and require a leakproof result."""
        left_type = self._column_type(left, position)
        right_type = self._column_type(right, position)
        left_type = left_type or right_type or "text"
        right_type = right_type or left_type
        key = (operator, left_type, right_type)
        result = LEAKPROOF_OPERATORS.get(key)
        if result is not None:
            kind: Kind = "computed" if left.per_row or right.per_row else "constant"
            return _Value(kind, result)
        shown = f'operator "{operator}" on {left_type} and {right_type}'
        for literal, other in ((left, right), (right, left)):
            quoted = (operator, other.type, other.type)
            if literal.kind == "literal" and other.per_row and quoted in LEAKPROOF_OPERATORS:
                raise _Rejected(
                    f"{shown} is not allowed: {_NOT_LEAKPROOF}; quote the literal or pass it "
                    "as a parameter so that it takes the column's type",
                    position,
                )
        if key in FALLIBLE_OPERATORS:
            raise _Rejected(f"{shown} is not allowed: {_NOT_LEAKPROOF}", position)
        raise _Rejected(f"there is no {shown}", position)

    def _cast(self, node: Any, position: int | None) -> _Value:
        names: tuple[Any, ...] = node.typeName.names or ()
        target = canonical_type(str(names[-1].sval)) + ("[]" if node.typeName.arrayBounds else "")
        argument = node.arg
        if isinstance(argument, ast.A_Const):
            return _Value("constant", target)
        if isinstance(argument, ast.ParamRef):
            raise _Rejected(
                "casting a parameter is not allowed in leakproof mode (the cast may run per "
                "row); a parameter takes the type of the column it is compared with",
                position,
            )
        value = self.value(argument, position)
        source = self._column_type(value, position)
        if not value.per_row:
            raise _Rejected("in leakproof mode a cast may only be applied to a literal", position)
        if (source, target) not in LEAKPROOF_CASTS:
            raise _Rejected(
                f"a cast from {source} to {target} is not allowed: {_NOT_LEAKPROOF}", position
            )
        return _Value("computed", target)

    def _common(self, values: list[_Value], what: str, position: int | None) -> _Value:
        types = {self._column_type(value, position) for value in values} - {None}
        kind: Kind = "computed" if any(value.per_row for value in values) else "constant"
        if len(types) > 1:
            raise _Rejected(
                f"{what} mixes the types {', '.join(sorted(t for t in types if t))}; quote the "
                "literals or use parameters so that they take the column's type",
                position,
            )
        if not types:
            return _Value("unknown" if kind == "constant" else kind)
        return _Value(kind, types.pop())

    def _array(self, elements: tuple[Any, ...], position: int | None) -> _Value:
        common = self._common([self.value(e, position) for e in elements], "ARRAY[...]", position)
        if common.type is None:
            return _Value("constant" if common.kind == "unknown" else common.kind)
        element = common.type
        return _Value(common.kind, element if element.endswith("[]") else element + "[]")

    def _subscript(self, node: Any, position: int | None) -> _Value:
        array = self.value(node.arg, position)
        array_type = self._column_type(array, position)
        if array_type is None or not array_type.endswith("[]"):
            raise _Rejected("only array values can be subscripted", position)
        sliced = False
        for step in node.indirection or ():
            sliced = sliced or bool(step.is_slice)
            for bound in (step.lidx, step.uidx):
                if bound is None:
                    continue
                index = self.value(bound, position)
                if self._column_type(index, position) not in (None, "int2", "int4"):
                    raise _Rejected("an array subscript must be an int2 or int4 value", position)
        return _Value("computed", array_type if sliced else array_type[:-2])

    def _function(self, node: Any, position: int | None) -> _Value:
        name = str(node.funcname[0].sval)
        arguments: tuple[Any, ...] = node.args or ()
        if name in _LIKE_FUNCTIONS and len(arguments) == 2:
            self._like(arguments[0], arguments[1], False, position)
            return _BOOL
        values = [self.value(argument, position) for argument in arguments]
        types = tuple(self._column_type(value, position) or "text" for value in values)
        result = LEAKPROOF_FUNCTIONS.get((name, types))
        if result is None:
            raise _Rejected(
                f"{name}({', '.join(types)}) is not allowed: {_NOT_LEAKPROOF}", position
            )
        return _Value("computed" if any(v.per_row for v in values) else "constant", result)

    def _a_expr(self, node: Any, position: int | None) -> _Value:
        kind = node.kind
        operator = str(node.name[0].sval)
        if node.lexpr is None:
            raise _Rejected(
                f'prefix operator "{operator}" is not allowed in leakproof mode', position
            )
        if operator in _LIKE_OPS:
            any_all = kind in (A_Expr_Kind.AEXPR_OP_ANY, A_Expr_Kind.AEXPR_OP_ALL)
            self._like(node.lexpr, node.rexpr, any_all, position)
            return _BOOL
        if isinstance(node.lexpr, ast.RowExpr) and isinstance(node.rexpr, ast.RowExpr):
            return self._rows(operator, node, position)
        left = self.value(node.lexpr, position)
        if kind == A_Expr_Kind.AEXPR_OP:
            return self._operator(operator, left, self.value(node.rexpr, position), position)
        if kind in (A_Expr_Kind.AEXPR_DISTINCT, A_Expr_Kind.AEXPR_NOT_DISTINCT):
            self._operator("=", left, self.value(node.rexpr, position), position)
            return _BOOL
        if kind in (A_Expr_Kind.AEXPR_OP_ANY, A_Expr_Kind.AEXPR_OP_ALL):
            self._any(operator, left, node.rexpr, position)
            return _BOOL
        if kind == A_Expr_Kind.AEXPR_IN:
            self._in(operator, left, node.rexpr, position)
            return _BOOL
        # BETWEEN and its variants expand to two of < <= > >= (which two depends on NOT and
        # SYMMETRIC); all four must be leakproof for each bound.
        for bound in node.rexpr:
            value = self.value(bound, position)
            for comparison in ("<", "<=", ">", ">="):
                self._operator(comparison, left, value, position)
        return _BOOL

    def _rows(self, operator: str, node: Any, position: int | None) -> _Value:
        lefts, rights = node.lexpr.args or (), node.rexpr.args or ()
        if operator not in ("=", "<>") or len(lefts) != len(rights):
            raise _Rejected(
                "row values may only be compared with = or <> in leakproof mode", position
            )
        for left, right in zip(lefts, rights, strict=True):
            self._operator(
                operator, self.value(left, position), self.value(right, position), position
            )
        return _BOOL

    def _in(self, operator: str, left: _Value, elements: Any, position: int | None) -> None:
        # With two or more constants Postgres compares in the common type of the column and
        # the list; requiring every typed literal to have the column's type keeps that type
        # equal to the column's, so the per-element check below is the one Postgres runs.
        for element in elements:
            value = self.value(element, self._position(element, position))
            if left.per_row and value.kind == "literal" and value.type != left.type:
                raise _Rejected(
                    f"IN mixes {left.type or 'an untyped column'} with the {value.type} literal "
                    f"{_literal_text(element)}; quote the literal or pass it as a parameter so "
                    "that it takes the column's type",
                    self._position(element, position),
                )
            self._operator(operator, left, value, position)

    def _any(self, operator: str, left: _Value, array_node: Any, position: int | None) -> None:
        array = self.value(array_node, position)
        array_type = self._column_type(array, position)
        if array.kind == "unknown":
            # '{...}' or $n: Postgres types it as an array of the left side's type.
            self._operator(operator, left, _Value("unknown"), position)
            return
        if array_type is not None:
            if not array_type.endswith("[]"):
                raise _Rejected("ANY/ALL needs an array", position)
            element = _Value(array.kind, array_type[:-2])
            self._operator(operator, left, element, position)
            return
        # ARRAY[...] of string literals and parameters: Postgres builds it as text[] before it
        # looks at the left side, while Electric may type inlined parameters as the left
        # side's type. Either must be leakproof or not resolve at all (a parse-time error).
        left_type = self._column_type(left, position) or "text"
        candidates = {(operator, left_type, left_type), (operator, left_type, "text")}
        if any(key in FALLIBLE_OPERATORS for key in candidates) or not any(
            key in LEAKPROOF_OPERATORS for key in candidates
        ):
            raise _Rejected(
                f'operator "{operator}" with ANY/ALL on {left_type} is not allowed: '
                f"{_NOT_LEAKPROOF}",
                position,
            )

    def _like(self, subject: Any, pattern: Any, any_all: bool, position: int | None) -> None:
        value = self.value(subject, position)
        subject_type = self._column_type(value, position)
        if not value.per_row or subject_type not in TEXT_TYPES:
            raise _Rejected(
                "in leakproof mode LIKE/ILIKE is only allowed on a text or varchar column, with "
                f"a constant pattern: {_NOT_LEAKPROOF}",
                position,
            )
        if not any_all:
            self._pattern(pattern, position)
            return
        if not isinstance(pattern, ast.A_ArrayExpr):
            raise _Rejected(
                "LIKE ANY/ALL needs ARRAY[...] of string literals or parameters in leakproof "
                "mode, so that each pattern can be checked",
                position,
            )
        for element in pattern.elements or ():
            self._pattern(element, position)

    def _pattern(self, node: Any, fallback: int | None) -> None:
        position = self._position(node, fallback)
        if isinstance(node, ast.ParamRef):
            self.like_params.add(int(node.number or 0))
            return
        constant: Any = node.val if isinstance(node, ast.A_Const) else None
        if isinstance(node, ast.A_Const) and (node.isnull or isinstance(constant, ast.String)):
            problem = None if node.isnull else like_pattern_problem(str(constant.sval))
            if problem is not None:
                raise _Rejected(problem, position)
            return
        raise _Rejected(
            "in leakproof mode a LIKE pattern must be a string literal or a parameter ($n), "
            "which the proxy checks: any other pattern could make LIKE fail on other tenants' "
            "rows",
            position,
        )
