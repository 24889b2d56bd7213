"""The allow-list walk over client expressions: Electric's evaluable subset, nothing more."""

from __future__ import annotations

from typing import Any, Final

from pglast import ast
from pglast.enums import A_Expr_Kind, CoercionForm

from ._errors import _Rejected
from ._limits import Limits
from ._text import _node_position
from ._types import BASE_TYPES

# Electric casts to its column types, except numeric (not in its cast list).
_CAST_TYPES: Final = BASE_TYPES - {"numeric"}

_FUNCTIONS: Final = frozenset(
    {
        "lower",
        "upper",
        "concat",
        "like",
        "ilike",
        "int2",
        "int4",
        "int8",
        "float4",
        "float8",
        "numeric",
        "bool",
        "uuid",
        "text",
        "date",
        "time",
        "timestamp",
        "timestamptz",
        "interval",
        "array_cat",
        "array_prepend",
        "array_append",
        "array_ndims",
        "justify_days",
        "justify_hours",
        "justify_interval",
        "timezone",
    }
)

_BOOLEAN_FUNCTIONS: Final = frozenset({"like", "ilike", "bool"})

_COMPARISON_OPS: Final = frozenset(
    {"=", "<>", "<", ">", "<=", ">=", "~~", "~~*", "!~~", "!~~*", "@>", "<@", "&&"}
)
_BINARY_OPS: Final = _COMPARISON_OPS | frozenset({"+", "-", "*", "/", "^", "&", "|", "#", "||"})
_PREFIX_OPS: Final = frozenset({"+", "-", "|/", "@", "~"})

_BETWEEN_KINDS: Final = {
    A_Expr_Kind.AEXPR_BETWEEN: "BETWEEN",
    A_Expr_Kind.AEXPR_NOT_BETWEEN: "NOT BETWEEN",
    A_Expr_Kind.AEXPR_BETWEEN_SYM: "BETWEEN SYMMETRIC",
    A_Expr_Kind.AEXPR_NOT_BETWEEN_SYM: "NOT BETWEEN SYMMETRIC",
}
_FIXED_OPERATOR_KINDS: Final = {
    A_Expr_Kind.AEXPR_IN: frozenset({"=", "<>"}),
    A_Expr_Kind.AEXPR_LIKE: frozenset({"~~", "!~~"}),
    A_Expr_Kind.AEXPR_ILIKE: frozenset({"~~*", "!~~*"}),
    A_Expr_Kind.AEXPR_DISTINCT: frozenset({"="}),
    A_Expr_Kind.AEXPR_NOT_DISTINCT: frozenset({"="}),
}
_KIND_NAMES: Final = {
    A_Expr_Kind.AEXPR_NULLIF: "NULLIF",
    A_Expr_Kind.AEXPR_SIMILAR: "SIMILAR TO",
}

_NODE_NAMES: Final = {
    "SubLink": "subqueries are not allowed",
    "CaseExpr": "CASE expressions are not allowed",
    "SQLValueFunction": "CURRENT_DATE, CURRENT_USER and similar are not allowed",
    "CollateClause": "COLLATE is not allowed",
    "NamedArgExpr": "named function arguments are not allowed",
    "XmlExpr": "XML expressions are not allowed",
    "GroupingFunc": "GROUPING is not allowed",
    "A_Star": "'*' is not allowed",
}

# Functions the grammar itself inserts for SQL syntax; named after the syntax, not the function.
_SYNTAX_FUNCTIONS: Final = {
    ("pg_catalog", "like_escape"): "LIKE ... ESCAPE is not allowed",
    ("pg_catalog", "similar_to_escape"): "SIMILAR TO is not allowed",
    ("pg_catalog", "timezone"): "AT TIME ZONE is not allowed; use timezone(zone, value)",
    ("pg_catalog", "extract"): "EXTRACT is not allowed",
    ("pg_catalog", "overlaps"): "OVERLAPS is not allowed",
    ("pg_catalog", "position"): "POSITION is not allowed",
    ("pg_catalog", "substring"): "SUBSTRING is not allowed",
    ("pg_catalog", "overlay"): "OVERLAY is not allowed",
}


class _Checker:
    """Walks a client expression and refuses anything outside Electric's evaluable subset.

    A dispatch table keyed by exact node type means an unknown or new node type is refused
    by default instead of being walked past. This is the grammar only; what may run per row
    in leakproof mode is decided afterwards by :mod:`._row_safety`.
    """

    def __init__(self, columns: frozenset[str] | None, limits: Limits, offset: int) -> None:
        self.columns = columns
        self.limits = limits
        self.offset = offset
        self.nodes = 0
        self.params: set[int] = set()
        self.used_columns: set[str] = set()

    def visit(self, node: Any, depth: int, fallback: int | None) -> None:
        position = _node_position(node, self.offset, fallback)
        if depth > self.limits.max_depth:
            raise _Rejected(f"is nested more than {self.limits.max_depth} levels deep", position)
        self.nodes += 1
        if self.nodes > self.limits.max_nodes:
            raise _Rejected(f"has more than {self.limits.max_nodes} syntax nodes", position)
        handler = self._HANDLERS.get(type(node)) if isinstance(node, ast.Node) else None
        if handler is None:
            name = type(node).__name__
            raise _Rejected(_NODE_NAMES.get(name, f"{name} is not allowed in a filter"), position)
        handler(self, node, depth, position)

    def _visit_all(self, nodes: Any, depth: int, position: int | None) -> None:
        if nodes is None:
            return
        if not isinstance(nodes, tuple):
            nodes = (nodes,)
        for child in nodes:
            self.visit(child, depth + 1, position)

    def _a_const(self, node: Any, depth: int, position: int | None) -> None:
        if not node.isnull and not isinstance(
            node.val, ast.Integer | ast.Float | ast.String | ast.Boolean
        ):
            raise _Rejected("bit-string constants are not allowed", position)

    def _column_ref(self, node: Any, depth: int, position: int | None) -> None:
        fields: tuple[Any, ...] = node.fields or ()
        if any(isinstance(field, ast.A_Star) for field in fields):
            raise _Rejected("'*' is not allowed", position)
        if len(fields) != 1 or not isinstance(fields[0], ast.String):
            raise _Rejected(
                "qualified column names are not allowed; use the bare column name", position
            )
        name = str(fields[0].sval)
        if self.columns is not None and name not in self.columns:
            raise _Rejected(f'column "{name}" is not allowed', position)
        self.used_columns.add(name)

    def _param_ref(self, node: Any, depth: int, position: int | None) -> None:
        number = int(node.number)
        if number < 1:
            raise _Rejected("parameters are numbered from $1", position)
        if number > self.limits.max_params:
            raise _Rejected(
                f"parameter ${number} is above the limit of ${self.limits.max_params}", position
            )
        self.params.add(number)

    def _type_cast(self, node: Any, depth: int, position: int | None) -> None:
        type_name = node.typeName
        names = tuple(getattr(part, "sval", None) for part in type_name.names or ())
        shown = ".".join(str(name) for name in names)
        base = names[-1] if names and (len(names) == 1 or names[0] == "pg_catalog") else None
        bounds = type_name.arrayBounds or ()
        if (
            len(names) > 2
            or base not in _CAST_TYPES
            or type_name.setof
            or type_name.pct_type
            or not all(isinstance(bound, ast.Integer) for bound in bounds)
        ):
            raise _Rejected(f"cast to type {shown} is not allowed", position)
        if type_name.typmods:
            raise _Rejected("type modifiers in casts are not allowed", position)
        self.visit(node.arg, depth + 1, position)

    def _bool_expr(self, node: Any, depth: int, position: int | None) -> None:
        self._visit_all(node.args, depth, position)

    def _arg(self, node: Any, depth: int, position: int | None) -> None:
        self.visit(node.arg, depth + 1, position)

    def _a_expr(self, node: Any, depth: int, position: int | None) -> None:
        kind = node.kind
        names: tuple[Any, ...] = node.name or ()
        if len(names) != 1 or not isinstance(names[0], ast.String):
            raise _Rejected("schema-qualified operators (OPERATOR(...)) are not allowed", position)
        operator = names[0].sval
        list_rexpr = kind == A_Expr_Kind.AEXPR_IN or kind in _BETWEEN_KINDS
        if kind == A_Expr_Kind.AEXPR_OP:
            allowed = _PREFIX_OPS if node.lexpr is None else _BINARY_OPS
            if operator not in allowed:
                raise _Rejected(f'operator "{operator}" is not allowed', position)
        elif kind in (A_Expr_Kind.AEXPR_OP_ANY, A_Expr_Kind.AEXPR_OP_ALL):
            if operator not in _COMPARISON_OPS:
                raise _Rejected(f'operator "{operator}" is not allowed with ANY/ALL', position)
        elif kind in _FIXED_OPERATOR_KINDS:
            if operator not in _FIXED_OPERATOR_KINDS[kind]:
                raise _Rejected(f'operator "{operator}" is not allowed', position)
        elif kind in _BETWEEN_KINDS:
            if operator != _BETWEEN_KINDS[kind] or len(node.rexpr or ()) != 2:
                raise _Rejected(f"{_BETWEEN_KINDS[kind]} is malformed", position)
        else:
            raise _Rejected(
                f"{_KIND_NAMES.get(kind, 'this kind of expression')} is not allowed", position
            )
        if node.lexpr is not None:
            self.visit(node.lexpr, depth + 1, position)
        if node.rexpr is None or list_rexpr != isinstance(node.rexpr, tuple):
            raise _Rejected("malformed expression", position)
        self._visit_all(node.rexpr, depth, position)

    def _func_call(self, node: Any, depth: int, position: int | None) -> None:
        names = tuple(getattr(part, "sval", "?") for part in node.funcname)
        shown = ".".join(names)
        if names in _SYNTAX_FUNCTIONS:
            raise _Rejected(_SYNTAX_FUNCTIONS[names], position)
        if node.funcformat != CoercionForm.COERCE_EXPLICIT_CALL:
            raise _Rejected(f"this SQL construct ({shown}) is not allowed", position)
        if len(names) != 1:
            raise _Rejected(f"schema-qualified function {shown}() is not allowed", position)
        if names[0] not in _FUNCTIONS:
            raise _Rejected(f"function {shown}() is not allowed", position)
        if node.agg_star:
            raise _Rejected(f"{shown}(*) is not allowed", position)
        if node.agg_distinct:
            raise _Rejected("DISTINCT in function arguments is not allowed", position)
        if node.agg_order:
            raise _Rejected("ORDER BY in function arguments is not allowed", position)
        if node.agg_filter is not None:
            raise _Rejected("FILTER is not allowed", position)
        if node.over is not None:
            raise _Rejected("window functions (OVER) are not allowed", position)
        if node.agg_within_group:
            raise _Rejected("WITHIN GROUP is not allowed", position)
        if node.func_variadic:
            raise _Rejected("VARIADIC is not allowed", position)
        arguments: tuple[Any, ...] = node.args or ()
        for argument in arguments:
            self.visit(argument, depth + 1, position)

    def _args(self, node: Any, depth: int, position: int | None) -> None:
        self._visit_all(node.args, depth, position)

    def _row_expr(self, node: Any, depth: int, position: int | None) -> None:
        if node.colnames:
            raise _Rejected("named row fields are not allowed", position)
        self._visit_all(node.args, depth, position)

    def _array(self, node: Any, depth: int, position: int | None) -> None:
        self._visit_all(node.elements, depth, position)

    def _indirection(self, node: Any, depth: int, position: int | None) -> None:
        self.visit(node.arg, depth + 1, position)
        for step in node.indirection or ():
            if not isinstance(step, ast.A_Indices):
                raise _Rejected("field selection is not allowed; only array subscripts", position)
            self.visit(step, depth + 1, position)

    def _indices(self, node: Any, depth: int, position: int | None) -> None:
        for bound in (node.lidx, node.uidx):
            if bound is not None:
                self.visit(bound, depth + 1, position)

    _HANDLERS: Final = {
        ast.A_Const: _a_const,
        ast.ColumnRef: _column_ref,
        ast.ParamRef: _param_ref,
        ast.TypeCast: _type_cast,
        ast.BoolExpr: _bool_expr,
        ast.NullTest: _arg,
        ast.BooleanTest: _arg,
        ast.A_Expr: _a_expr,
        ast.FuncCall: _func_call,
        ast.CoalesceExpr: _args,
        ast.MinMaxExpr: _args,
        ast.A_ArrayExpr: _array,
        ast.A_Indirection: _indirection,
        ast.A_Indices: _indices,
        ast.RowExpr: _row_expr,
    }


def _is_boolean_shaped(node: Any) -> bool:
    """Whether the root can only be a condition, so obvious non-filters fail here, not upstream.

    Electric type-checks the full expression; this only catches roots such as ``1`` or
    ``'x'`` early with a clearer message.
    """
    if isinstance(node, ast.BoolExpr | ast.NullTest | ast.BooleanTest | ast.ColumnRef):
        return True
    if isinstance(node, ast.A_Const):
        return not node.isnull and isinstance(node.val, ast.Boolean)
    if isinstance(node, ast.A_Expr):
        if node.kind == A_Expr_Kind.AEXPR_OP:
            operator: tuple[Any, ...] = node.name or ()
            return node.lexpr is not None and operator[-1].sval in _COMPARISON_OPS
        return True
    if isinstance(node, ast.TypeCast) and node.typeName is not None:
        names: tuple[Any, ...] = node.typeName.names or ()
        return bool(names[-1].sval == "bool" and not node.typeName.arrayBounds)
    if isinstance(node, ast.FuncCall):
        function: tuple[Any, ...] = node.funcname or ()
        return len(function) == 1 and function[0].sval in _BOOLEAN_FUNCTIONS
    return False
