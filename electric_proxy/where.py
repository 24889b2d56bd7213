"""Row filters: the trusted server filter, the untrusted client filter, and their combination.

The proxy decides the shape server-side, so what Electric receives as ``where`` must never
select more rows than the policy's server filter allows. Everything here follows from that:

* Client text is parsed with Postgres's own parser (libpg_query via pglast, the parser family
  Electric uses), never inspected with regular expressions or bracket counting, because any
  lexical trick the checker misunderstands (dollar quotes, ``E''`` escapes, nested comments)
  is a break-out once the text is pasted next to the server filter.
* The parsed tree is checked against an allow-list of node types, operators, functions and
  casts (the subset Electric itself evaluates), so subqueries and side channels never reach
  Electric even where Electric would accept them.
* The server and client filters are combined as a syntax tree, ``AND(server, client)``, and
  deparsed. The deparsed text is parsed again and must give back exactly the tree that was
  built; if it does not, the request is refused rather than sent.
* User values only ever travel as positional parameters; the client's ``$n`` are shifted past
  the server's.

Parsing results are cached and immutable so that a client repeating a filter costs a dict
lookup, and so that nothing a request does can alter what a later request gets.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind, BoolExprType, CoercionForm, SetOperation, SortByDir
from pglast.parser import ParseError, scan
from pglast.stream import RawStream

__all__ = [
    "DEFAULT_LIMITS",
    "ClientFilter",
    "Limits",
    "ServerFilter",
    "WhereError",
    "check_params",
    "combine",
    "parse_client_where",
    "parse_order_by",
]

_WHERE_PREFIX: Final = "SELECT 1 WHERE "
_ORDER_PREFIX: Final = "SELECT 1 ORDER BY "

_CAST_TYPES: Final = frozenset(
    {
        "bool",
        "bytea",
        "date",
        "float4",
        "float8",
        "int2",
        "int4",
        "int8",
        "jsonb",
        "text",
        "time",
        "timestamp",
        "timestamptz",
        "uuid",
        "varchar",
        "interval",
    }
)

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

# Operations that cannot raise an error whatever row values they see: the only ones the
# leakproof rule lets touch a column (comparisons, IN, BETWEEN, IS ... are always allowed).
_INFALLIBLE_FUNCTIONS: Final = frozenset({"lower", "upper", "concat", "text", "array_ndims"})
_INFALLIBLE_CAST_TYPES: Final = frozenset({"text", "varchar"})
_PATTERN_OPS: Final = frozenset({"~~", "~~*", "!~~", "!~~*"})

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

# Which SelectStmt attribute betrays which clause, and the keyword tokens that start it
# (used only to point the client at the offending word).
_CLAUSES: Final = {
    "op": ("UNION/INTERSECT/EXCEPT", frozenset({"UNION", "INTERSECT", "EXCEPT"})),
    "larg": ("UNION/INTERSECT/EXCEPT", frozenset({"UNION", "INTERSECT", "EXCEPT"})),
    "rarg": ("UNION/INTERSECT/EXCEPT", frozenset({"UNION", "INTERSECT", "EXCEPT"})),
    "all": ("UNION/INTERSECT/EXCEPT", frozenset({"UNION", "INTERSECT", "EXCEPT"})),
    "withClause": ("WITH", frozenset({"WITH"})),
    "distinctClause": ("DISTINCT", frozenset({"DISTINCT"})),
    "intoClause": ("INTO", frozenset({"INTO"})),
    "fromClause": ("FROM", frozenset({"FROM"})),
    "groupClause": ("GROUP BY", frozenset({"GROUP_P"})),
    "groupDistinct": ("GROUP BY", frozenset({"GROUP_P"})),
    "havingClause": ("HAVING", frozenset({"HAVING"})),
    "windowClause": ("WINDOW", frozenset({"WINDOW"})),
    "valuesLists": ("VALUES", frozenset({"VALUES"})),
    "sortClause": ("ORDER BY", frozenset({"ORDER"})),
    "limitOffset": ("OFFSET", frozenset({"OFFSET"})),
    "limitCount": ("LIMIT", frozenset({"LIMIT", "FETCH"})),
    "limitOption": ("LIMIT", frozenset({"LIMIT", "FETCH"})),
    "lockingClause": ("FOR UPDATE/SHARE", frozenset({"FOR"})),
    "whereClause": ("WHERE", frozenset({"WHERE"})),
}

_CLAIM_SEGMENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAM_KEY: Final = re.compile(r"[1-9][0-9]{0,5}")


class WhereError(ValueError):
    """A filter that the proxy refuses.

    ``reason`` is written to be shown to the client as is: it only ever quotes the client's
    own input back. ``position`` is a 0-based character offset into the offending text, or
    None when no single place is to blame. ``field`` names the input (``where``,
    ``subset__where``, ``subset__order_by``, ``params``, ``server_where`` ...), so the caller
    can build Electric-style ``errors.<field>`` bodies.
    """

    reason: str
    position: int | None
    field: str

    def __init__(self, reason: str, *, position: int | None = None, field: str = "where") -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position
        self.field = field

    def __str__(self) -> str:
        at = "" if self.position is None else f" (at position {self.position})"
        return f"{self.field}: {self.reason}{at}"

    def __repr__(self) -> str:
        return f"WhereError({self.reason!r}, position={self.position!r}, field={self.field!r})"

    def to_dict(self) -> dict[str, object]:
        """The error as JSON-ready data, so every caller reports it the same way."""
        return {"field": self.field, "reason": self.reason, "position": self.position}


@dataclass(frozen=True)
class Limits:
    """Bounds on client filters.

    They exist because every distinct filter costs a parse here and a shape (memory and
    disk) in Electric, and because tree-walking code, here and in Electric, recurses.
    """

    max_length: int = 4096
    max_depth: int = 32
    max_nodes: int = 256
    max_params: int = 64

    def __post_init__(self) -> None:
        for name in ("max_length", "max_depth", "max_nodes", "max_params"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, not {value!r}")
        if self.max_depth > _DEPTH_CEILING:
            raise ValueError(
                f"Limits.max_depth above {_DEPTH_CEILING} would overflow the deparser's recursion"
            )


_DEPTH_CEILING: Final = 100
DEFAULT_LIMITS: Final = Limits()
# combine() re-walks filters it is handed; these bounds only keep that walk finite, the
# caller's own Limits were applied when the filter was parsed.
_RECHECK_LIMITS: Final = Limits(
    max_length=1 << 30, max_depth=_DEPTH_CEILING, max_nodes=1 << 30, max_params=1 << 30
)


class _Rejected(Exception):
    """Internal carrier for a refusal before the caller's field name is known."""

    def __init__(self, reason: str, position: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position


@dataclass(frozen=True)
class _Rejection:
    """A refusal in a form that can sit in a cache without being mutated or re-raised."""

    reason: str
    position: int | None


# --------------------------------------------------------------------------------------
# Lexing and parsing helpers shared by every entry point


def _check_text(text: object, max_length: int | None) -> str:
    """Reject what the parser must never see: non-strings, NUL, lone surrogates, huge input.

    libpg_query works on NUL-terminated UTF-8, so a NUL would silently truncate the text and
    a lone surrogate cannot be encoded at all; both are refused before parsing.
    """
    if not isinstance(text, str):
        raise _Rejected("must be a string")
    if max_length is not None and len(text) > max_length:
        raise _Rejected(f"is longer than {max_length} characters", max_length)
    nul = text.find("\x00")
    if nul >= 0:
        raise _Rejected("contains a NUL character", nul)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Rejected("is not valid UTF-8 (it contains a lone surrogate)", exc.start) from None
    return text


def _clamp(position: int, text: str) -> int:
    return max(0, min(position, len(text)))


def _parse_error(exc: ParseError, offset: int, text: str) -> _Rejected:
    """Translate a libpg_query error; its location counts characters of the wrapped text."""
    message = str(exc.args[0]) if exc.args else "syntax error"
    location = exc.args[1] if len(exc.args) > 1 else None
    position = len(text) if not isinstance(location, int) else _clamp(location - offset, text)
    return _Rejected(message, position)


def _tokens(wrapped: str, offset: int, text: str) -> list[Any]:
    """Tokens of the caller's part of ``wrapped``, as Postgres's own lexer sees them."""
    try:
        tokens = scan(wrapped)
    except ParseError as exc:
        raise _parse_error(exc, offset, text) from None
    return [token for token in tokens if token.start >= offset]


def _check_lexemes(tokens: Sequence[Any], offset: int, text: str) -> None:
    """Refuse lexical devices that only ever serve to hide one statement inside another.

    The combined filter is rebuilt from the syntax tree, so these would be harmless; they
    are refused anyway because no legitimate client needs them and a clear error is better
    than a silently normalised filter.
    """
    if not tokens:
        raise _Rejected("is empty", len(text))
    for token in tokens:
        position = token.start - offset
        if token.name in ("SQL_COMMENT", "C_COMMENT"):
            raise _Rejected("comments are not allowed", position)
        if token.name == "ASCII_59":
            raise _Rejected("';' is not allowed: a filter is a single expression", position)
        if token.name == "SCONST" and text[position] == "$":
            raise _Rejected("dollar-quoted strings are not allowed", position)


def _keyword_position(tokens: Sequence[Any], names: frozenset[str], offset: int) -> int | None:
    """Where a top-level clause keyword starts, to point the client at it."""
    depth = 0
    for token in tokens:
        if token.name == "ASCII_40":
            depth += 1
        elif token.name == "ASCII_41":
            depth -= 1
        elif depth == 0 and token.name in names:
            return int(token.start) - offset
    return None


def _is_unset(value: Any) -> bool:
    return value is None or value is False or value == () or (isinstance(value, int) and value == 0)


def _parse_single_select(
    wrapped: str, offset: int, text: str, tokens: Sequence[Any], keep: frozenset[str]
) -> Any:
    """Parse and insist on one plain ``SELECT 1`` carrying only the clauses in ``keep``.

    Every attribute of the statement is inspected, not just the known dangerous ones, so a
    clause added by a future Postgres release is refused rather than ignored.
    """
    try:
        statements = parse_sql(wrapped)
    except ParseError as exc:
        raise _parse_error(exc, offset, text) from None
    except RecursionError:
        raise _Rejected("is nested too deeply") from None
    if len(statements) != 1:
        raise _Rejected("more than one statement; a filter is a single expression")
    statement = statements[0].stmt
    if not isinstance(statement, ast.SelectStmt):
        raise _Rejected("is not a single expression")
    if statement.op != SetOperation.SETOP_NONE:
        label, names = _CLAUSES["op"]
        raise _Rejected(
            f"{label} is not allowed: a filter is a single expression",
            _keyword_position(tokens, names, offset),
        )
    for attribute in statement:
        if attribute in keep or attribute == "targetList":
            continue
        if not _is_unset(getattr(statement, attribute)):
            label, names = _CLAUSES.get(attribute, (attribute, frozenset()))
            raise _Rejected(
                f"{label} is not allowed: a filter is a single expression",
                _keyword_position(tokens, names, offset),
            )
    target = statement.targetList
    if (
        not isinstance(target, tuple)
        or len(target) != 1
        or not isinstance(target[0], ast.ResTarget)
        or target[0].name is not None
        or target[0].indirection
        or target[0].val != ast.A_Const(isnull=False, val=ast.Integer(ival=1))
    ):
        raise _Rejected("is not a single expression")
    for attribute in keep:
        if getattr(statement, attribute) is None:
            raise _Rejected("is not a single expression")
    return statement


def _deparse(node: Any) -> str:
    """Deparse with pglast; any failure is a refusal, never a half-written filter."""
    try:
        return str(RawStream()(node))
    except Exception:
        raise _Rejected("could not be normalised") from None


def _parse_expression(sql: str) -> Any:
    """Parse already-normalised filter text back into its tree (no client-facing checks)."""
    wrapped = _WHERE_PREFIX + sql
    tokens = _tokens(wrapped, len(_WHERE_PREFIX), sql)
    for token in tokens:
        if token.name == "ASCII_59":
            raise _Rejected(
                "';' is not allowed: a filter is a single expression",
                token.start - len(_WHERE_PREFIX),
            )
    statement = _parse_single_select(
        wrapped, len(_WHERE_PREFIX), sql, tokens, frozenset({"whereClause"})
    )
    return statement.whereClause


def _walk(node: Any) -> Iterator[Any]:
    """Every node below ``node``, for bookkeeping on trees that have already been bounded."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, tuple):
            stack.extend(current)
        elif isinstance(current, ast.Node):
            yield current
            for attribute in current:
                stack.append(getattr(current, attribute))


def _param_numbers(node: Any) -> set[int]:
    return {n.number or 0 for n in _walk(node) if isinstance(n, ast.ParamRef)}


def _round_trip(node: Any) -> str:
    """Deparse ``node`` and prove that the text means exactly ``node``.

    The proof is what makes the deparser safe to rely on: a precedence slip, a lost
    parenthesis or a comment-forming ``--`` would give a different tree and is refused.
    """
    sql = _deparse(node)
    try:
        again = _parse_expression(sql)
    except _Rejected:
        raise _Rejected("could not be normalised") from None
    try:
        same = bool(again == node)
    except RecursionError:
        same = False
    if not same:
        raise _Rejected("could not be normalised")
    return sql


# --------------------------------------------------------------------------------------
# The allow-list walk over client expressions


class _Checker:
    """Walks a client expression and refuses anything outside Electric's evaluable subset.

    A dispatch table keyed by exact node type means an unknown or new node type is refused
    by default instead of being walked past. Every handler returns whether its subtree reads
    a column, which is what the ``leakproof`` rule needs (see :func:`parse_client_where`).
    """

    def __init__(
        self, columns: frozenset[str] | None, limits: Limits, offset: int, *, leakproof: bool
    ) -> None:
        self.columns = columns
        self.limits = limits
        self.offset = offset
        self.leakproof = leakproof
        self.nodes = 0
        self.params: set[int] = set()
        self.used_columns: set[str] = set()

    def position(self, node: Any, fallback: int | None) -> int | None:
        location = getattr(node, "location", None)
        if isinstance(location, int) and location >= self.offset:
            return location - self.offset
        return fallback

    def visit(self, node: Any, depth: int, fallback: int | None) -> bool:
        position = self.position(node, fallback)
        if depth > self.limits.max_depth:
            raise _Rejected(f"is nested more than {self.limits.max_depth} levels deep", position)
        self.nodes += 1
        if self.nodes > self.limits.max_nodes:
            raise _Rejected(f"has more than {self.limits.max_nodes} syntax nodes", position)
        handler = self._HANDLERS.get(type(node)) if isinstance(node, ast.Node) else None
        if handler is None:
            name = type(node).__name__
            raise _Rejected(_NODE_NAMES.get(name, f"{name} is not allowed in a filter"), position)
        return bool(handler(self, node, depth, position))

    def _visit_all(self, nodes: Any, depth: int, position: int | None) -> bool:
        if nodes is None:
            return False
        if not isinstance(nodes, tuple):
            nodes = (nodes,)
        reads = False
        for child in nodes:
            reads = self.visit(child, depth + 1, position) or reads
        return reads

    def _fallible(self, reads_column: bool, what: str, position: int | None) -> None:
        """Refuse an operation that can raise an error depending on a row's values.

        Postgres does not promise to evaluate ``server AND client`` left to right, so a
        client conjunct such as ``1 / (id - 5) = 0`` may run on rows the server conjunct
        excludes, and whether the request fails then reveals that such a row exists.
        """
        if self.leakproof and reads_column:
            raise _Rejected(
                f"{what} is not allowed: it can fail on rows outside the policy and so reveal them",
                position,
            )

    def _a_const(self, node: Any, depth: int, position: int | None) -> bool:
        if not node.isnull and not isinstance(
            node.val, ast.Integer | ast.Float | ast.String | ast.Boolean
        ):
            raise _Rejected("bit-string constants are not allowed", position)
        return False

    def _column_ref(self, node: Any, depth: int, position: int | None) -> bool:
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
        return True

    def _param_ref(self, node: Any, depth: int, position: int | None) -> bool:
        number = int(node.number)
        if number < 1:
            raise _Rejected("parameters are numbered from $1", position)
        if number > self.limits.max_params:
            raise _Rejected(
                f"parameter ${number} is above the limit of ${self.limits.max_params}", position
            )
        self.params.add(number)
        return False

    def _type_cast(self, node: Any, depth: int, position: int | None) -> bool:
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
        reads = self.visit(node.arg, depth + 1, position)
        if bounds or base not in _INFALLIBLE_CAST_TYPES:
            self._fallible(reads, f"casting column values to {base}", position)
        return reads

    def _bool_expr(self, node: Any, depth: int, position: int | None) -> bool:
        return self._visit_all(node.args, depth, position)

    def _arg(self, node: Any, depth: int, position: int | None) -> bool:
        return self.visit(node.arg, depth + 1, position)

    def _a_expr(self, node: Any, depth: int, position: int | None) -> bool:
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
        left = False if node.lexpr is None else self.visit(node.lexpr, depth + 1, position)
        if node.rexpr is None or list_rexpr != isinstance(node.rexpr, tuple):
            raise _Rejected("malformed expression", position)
        right = self._visit_all(node.rexpr, depth, position)
        if operator in _PATTERN_OPS:
            self._fallible(right, "a LIKE pattern taken from a column", position)
        elif kind == A_Expr_Kind.AEXPR_OP and operator not in _COMPARISON_OPS:
            self._fallible(left or right, f'operator "{operator}" on column values', position)
        return left or right

    def _func_call(self, node: Any, depth: int, position: int | None) -> bool:
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
        reads = [self.visit(argument, depth + 1, position) for argument in arguments]
        if names[0] in ("like", "ilike"):
            self._fallible(any(reads[1:]), "a LIKE pattern taken from a column", position)
        elif names[0] not in _INFALLIBLE_FUNCTIONS:
            self._fallible(any(reads), f"{shown}() on column values", position)
        return any(reads)

    def _args(self, node: Any, depth: int, position: int | None) -> bool:
        return self._visit_all(node.args, depth, position)

    def _row_expr(self, node: Any, depth: int, position: int | None) -> bool:
        if node.colnames:
            raise _Rejected("named row fields are not allowed", position)
        return self._visit_all(node.args, depth, position)

    def _array(self, node: Any, depth: int, position: int | None) -> bool:
        reads = self._visit_all(node.elements, depth, position)
        self._fallible(reads, "ARRAY[...] of column values", position)
        return reads

    def _indirection(self, node: Any, depth: int, position: int | None) -> bool:
        reads = self.visit(node.arg, depth + 1, position)
        for step in node.indirection or ():
            if not isinstance(step, ast.A_Indices):
                raise _Rejected("field selection is not allowed; only array subscripts", position)
            if self.visit(step, depth + 1, position):
                self._fallible(True, "an array subscript computed from a column", position)
        return reads

    def _indices(self, node: Any, depth: int, position: int | None) -> bool:
        reads = False
        for bound in (node.lidx, node.uidx):
            if bound is not None:
                reads = self.visit(bound, depth + 1, position) or reads
        return reads

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


# --------------------------------------------------------------------------------------
# Public API


@dataclass(frozen=True)
class ServerFilter:
    """A policy's row filter, compiled once at start-up from trusted configuration.

    ``sql`` is the normalised filter with ``$1..$s``; ``claims`` names the claim that feeds
    each ``$k`` (``claims[k-1]``), so per-request work is only looking values up. Build it
    with :meth:`compile`; hand-made instances are re-checked by :func:`combine` anyway.
    """

    sql: str
    claims: tuple[str, ...]

    @classmethod
    def compile(cls, text: str, *, field: str = "server_where") -> ServerFilter:
        """Turn ``org_id = :org_id AND ...`` into ``org_id = $1 AND ...`` plus claim names.

        Placeholders are found in Postgres's token stream, not by regex, so ``':org_id'``
        inside a string and ``::type`` casts are left alone. Inside ``[...]`` a colon is
        always the array-slice separator. ``$n`` is refused so that parameter numbering is
        owned by this module alone. The server filter is trusted: it is not held to the
        client allow-list (it may, for instance, use a membership subquery), but it must
        still be one expression.
        """
        try:
            return cls._compile(text)
        except _Rejected as exc:
            raise WhereError(exc.reason, position=exc.position, field=field) from None
        except RecursionError:
            raise WhereError("is nested too deeply", field=field) from None

    @classmethod
    def _compile(cls, text: str) -> ServerFilter:
        text = _check_text(text, None)
        offset = len(_WHERE_PREFIX)
        tokens = _tokens(_WHERE_PREFIX + text, offset, text)
        if not tokens:
            raise _Rejected("is empty", len(text))
        claims: list[str] = []
        pieces: list[str] = []
        spans: list[_Substitution] = []
        written = 0
        cursor = 0
        bracket_depth = 0
        index = 0
        while index < len(tokens):
            token = tokens[index]
            index += 1
            if token.name == "PARAM":
                raise _Rejected(
                    "positional parameters ($n) are not allowed in a server filter; "
                    "use :claim_name placeholders",
                    token.start - offset,
                )
            if token.name == "ASCII_91":
                bracket_depth += 1
            elif token.name == "ASCII_93":
                bracket_depth -= 1
            if token.name != "ASCII_58" or bracket_depth > 0:
                continue
            name, index = _claim_name(tokens, index, token.end, text, offset)
            if name is None:
                raise _Rejected(
                    "':' must be followed directly by a claim name, e.g. :org_id",
                    token.start - offset,
                )
            if name not in claims:
                claims.append(name)
            start = token.start - offset
            end = tokens[index - 1].end + 1 - offset
            replacement = f" ${claims.index(name) + 1} "
            before = text[cursor:start]
            pieces += [before, replacement]
            written += len(before)
            spans.append(_Substitution(written, written + len(replacement), start, end))
            written += len(replacement)
            cursor = end
        pieces.append(text[cursor:])
        substituted = "".join(pieces)
        try:
            node = _parse_expression(substituted)
        except _Rejected as exc:
            raise _Rejected(exc.reason, _original_position(exc.position, spans)) from None
        if _param_numbers(node) != set(range(1, len(claims) + 1)):
            raise _Rejected("placeholders could not be resolved unambiguously")
        return cls(sql=_round_trip(node), claims=tuple(claims))


@dataclass(frozen=True)
class _Substitution:
    """Where one placeholder was replaced, to report errors against the configured text."""

    new_start: int
    new_end: int
    old_start: int
    old_end: int


def _claim_name(
    tokens: Sequence[Any], index: int, colon_end: int, text: str, offset: int
) -> tuple[str | None, int]:
    """Read ``name`` or ``name.sub.sub`` glued to a colon; keywords count as names here.

    Returns the name (None if there is none) and the index of the first token after it.
    """
    parts: list[str] = []
    after_name = index
    want_name = True
    previous_end = colon_end
    while index < len(tokens) and tokens[index].start == previous_end + 1:
        token = tokens[index]
        if want_name:
            word = text[token.start - offset : token.end + 1 - offset]
            if not _CLAIM_SEGMENT.fullmatch(word):
                break
            parts.append(word)
            after_name = index + 1
        elif token.name != "ASCII_46":
            break
        want_name = not want_name
        previous_end = token.end
        index += 1
    return (".".join(parts) if parts else None), after_name


def _original_position(position: int | None, spans: Sequence[_Substitution]) -> int | None:
    """Map an offset in the placeholder-substituted text back to the configured text."""
    if position is None:
        return None
    delta = 0
    for span in spans:
        if position < span.new_start:
            break
        if position < span.new_end:
            return span.old_start
        delta = span.old_end - span.new_end
    return position + delta


@dataclass(frozen=True)
class ClientFilter:
    """A validated, normalised client filter; cached and shared, hence immutable.

    ``sql`` uses the client's own numbering ``$1..$max_param`` (without gaps);
    :func:`combine` shifts it past the server's parameters. ``columns`` lists the column
    names it reads, for callers that log or meter them.
    """

    sql: str
    max_param: int
    columns: frozenset[str] = frozenset()


@functools.lru_cache(maxsize=2048)
def _parse_client_cached(
    text: str, columns: frozenset[str] | None, limits: Limits, leakproof: bool
) -> ClientFilter | _Rejection:
    try:
        return _parse_client(text, columns, limits, leakproof)
    except _Rejected as exc:
        return _Rejection(exc.reason, exc.position)
    except RecursionError:
        return _Rejection("is nested too deeply", None)


def _parse_client(
    text: str, columns: frozenset[str] | None, limits: Limits, leakproof: bool
) -> ClientFilter:
    text = _check_text(text, limits.max_length)
    offset = len(_WHERE_PREFIX)
    wrapped = _WHERE_PREFIX + text
    tokens = _tokens(wrapped, offset, text)
    _check_lexemes(tokens, offset, text)
    statement = _parse_single_select(wrapped, offset, text, tokens, frozenset({"whereClause"}))
    root = statement.whereClause
    checker = _Checker(columns, limits, offset, leakproof=leakproof)
    checker.visit(root, 1, None)
    if not _is_boolean_shaped(root):
        raise _Rejected(
            "must be a condition (a comparison, IN, LIKE, IS NULL, AND/OR/NOT ...)",
            checker.position(root, 0),
        )
    highest = max(checker.params, default=0)
    missing = sorted(set(range(1, highest + 1)) - checker.params)
    if missing:
        raise _Rejected(
            f"parameter ${missing[0]} is never used; number parameters $1..${highest} without gaps"
        )
    return ClientFilter(
        sql=_round_trip(root), max_param=highest, columns=frozenset(checker.used_columns)
    )


def parse_client_where(
    text: str,
    *,
    columns: frozenset[str] | None,
    limits: Limits = DEFAULT_LIMITS,
    field: str = "where",
    leakproof: bool = True,
) -> ClientFilter:
    """Validate an untrusted filter (``where`` or ``subset__where``) from a client.

    ``columns=None`` lets the filter name any column (the policy does not restrict them);
    otherwise only those bare names, compared exactly as Postgres folds them (unquoted
    names are lower-cased).

    ``leakproof`` (the default) additionally refuses operations that can raise an error
    depending on a row's values when they are applied to columns: arithmetic, ``||``,
    casts other than to text, input and date/array functions, column-valued LIKE patterns,
    ``ARRAY[...]`` of columns and computed subscripts. Postgres may evaluate the client's
    conjunct on rows the server conjunct rejects, and an error is then a one-bit oracle
    about rows of other tenants. Comparisons, IN, BETWEEN, LIKE with a constant or
    parameter pattern, IS [NOT] NULL/DISTINCT, lower/upper/concat and casts to text stay
    allowed. Pass ``leakproof=False`` to accept Electric's whole grammar.

    Refusals are cached as well as successes, so repeating a bad filter is as cheap as
    repeating a good one.
    """
    if columns is not None and not isinstance(columns, frozenset):
        columns = frozenset(columns)
    if not isinstance(text, str):
        raise WhereError("must be a string", field=field)
    result = _parse_client_cached(text, columns, limits, leakproof)
    if isinstance(result, _Rejection):
        raise WhereError(result.reason, position=result.position, field=field)
    return result


def _shift_params(node: Any, by: int) -> None:
    for child in _walk(node):
        if isinstance(child, ast.ParamRef):
            child.number = (child.number or 0) + by


def _expect_params(node: Any, count: int, what: str) -> None:
    if _param_numbers(node) != set(range(1, count + 1)):
        raise _Rejected(f"{what} does not use exactly the parameters $1..${count}")


@functools.lru_cache(maxsize=2048)
def _combine_cached(server: ServerFilter | None, client: ClientFilter | None) -> str:
    conjuncts: list[Any] = []
    server_count = 0
    if server is not None:
        server_count = len(server.claims)
        server_node = _parse_expression(server.sql)
        _expect_params(server_node, server_count, "the server filter")
        if isinstance(server_node, ast.BoolExpr) and server_node.boolop == BoolExprType.AND_EXPR:
            conjuncts.extend(server_node.args or ())
        else:
            conjuncts.append(server_node)
    if client is not None:
        client_node = _parse_expression(client.sql)
        recheck = _Checker(None, _RECHECK_LIMITS, len(_WHERE_PREFIX), leakproof=False)
        recheck.visit(client_node, 1, None)
        _expect_params(client_node, client.max_param, "the filter")
        _shift_params(client_node, server_count)
        conjuncts.append(client_node)
    if server is not None and client is not None:
        root = ast.BoolExpr(boolop=BoolExprType.AND_EXPR, args=tuple(conjuncts))
    else:
        root = server_node if server is not None else client_node
    sql = _round_trip(root)
    _expect_params(root, server_count + (client.max_param if client else 0), "the result")
    return sql


def combine(
    server: ServerFilter | None, client: ClientFilter | None, *, field: str = "where"
) -> str | None:
    """The ``where`` to send upstream; the client's rows are a subset of the server's.

    The server's parameters keep ``$1..$s``; the client's ``$i`` become ``$(i+s)``, so the
    caller sends ``params`` = server claim values followed by the client's values. The two
    filters are joined as ``BoolExpr(AND, [server conjuncts..., client])``: a server filter
    that is itself an AND is spliced in flat because that is how Postgres parses
    ``a AND b AND (client)``, which lets the result be proved by re-parsing it.

    Both inputs are re-parsed here rather than trusted, so a hand-built ``ClientFilter``
    still cannot contain a subquery or break out of its conjunct. The output is a pure
    function of the inputs (and cached), which keeps the shape definition stable.
    """
    if server is None and client is None:
        return None
    try:
        return _combine_cached(server, client)
    except _Rejected as exc:
        raise WhereError(exc.reason, field=field) from None
    except RecursionError:
        raise WhereError("is nested too deeply", field=field) from None


@functools.lru_cache(maxsize=1024)
def _parse_order_cached(
    text: str, columns: frozenset[str] | None, limits: Limits
) -> str | _Rejection:
    try:
        return _parse_order(text, columns, limits)
    except _Rejected as exc:
        return _Rejection(exc.reason, exc.position)
    except RecursionError:
        return _Rejection("is nested too deeply", None)


def _parse_order(text: str, columns: frozenset[str] | None, limits: Limits) -> str:
    text = _check_text(text, limits.max_length)
    offset = len(_ORDER_PREFIX)
    wrapped = _ORDER_PREFIX + text
    tokens = _tokens(wrapped, offset, text)
    _check_lexemes(tokens, offset, text)
    statement = _parse_single_select(wrapped, offset, text, tokens, frozenset({"sortClause"}))
    items = statement.sortClause
    if len(items) > limits.max_nodes:
        raise _Rejected(f"has more than {limits.max_nodes} sort keys")
    for item in items:
        expression = item.node
        location = getattr(expression, "location", None)
        position = location - offset if isinstance(location, int) and location >= offset else None
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
    again = _parse_single_select(
        _ORDER_PREFIX + sql,
        offset,
        sql,
        _tokens(_ORDER_PREFIX + sql, offset, sql),
        frozenset({"sortClause"}),
    )
    if again.sortClause != items:
        raise _Rejected("could not be normalised")
    return sql


def parse_order_by(
    text: str,
    *,
    columns: frozenset[str] | None,
    limits: Limits = DEFAULT_LIMITS,
    field: str = "subset__order_by",
) -> str:
    """Validate ``subset__order_by`` and return it normalised.

    Only bare column names with ASC/DESC and NULLS FIRST/LAST are accepted: an ordering is
    an oracle over the rows it sorts, so it gets the same column restriction as a filter,
    and constants (``ORDER BY 1``) are refused because their meaning is positional.
    """
    if columns is not None and not isinstance(columns, frozenset):
        columns = frozenset(columns)
    if not isinstance(text, str):
        raise WhereError("must be a string", field=field)
    result = _parse_order_cached(text, columns, limits)
    if isinstance(result, _Rejection):
        raise WhereError(result.reason, position=result.position, field=field)
    return result


def check_params(
    params: Mapping[str, str],
    *,
    needed: int,
    field: str = "params",
    limits: Limits = DEFAULT_LIMITS,
) -> list[str]:
    """Validate a client's parameter map and return the values in ``$1..$N`` order.

    Keys must be canonical decimal numbers (``"01"`` and ``"1"`` would both mean ``$1`` to
    Electric, and two values for one parameter is an ambiguity an attacker can exploit).
    Exactly the parameters the filter uses must be present: a missing one would fail
    upstream, an extra one would only multiply shapes.
    """
    if not isinstance(params, Mapping):
        raise WhereError("must be an object mapping parameter numbers to strings", field=field)
    numbers: dict[int, str] = {}
    for key, value in params.items():
        if not isinstance(key, str) or not _PARAM_KEY.fullmatch(key):
            raise WhereError(
                f"parameter keys must be numbers from 1 without leading zeros, not {key!r}",
                field=field,
            )
        number = int(key)
        if number > limits.max_params:
            raise WhereError(
                f"parameter {number} is above the limit of {limits.max_params}", field=field
            )
        if not isinstance(value, str):
            raise WhereError(f"parameter {number} must be a string", field=field)
        nul = value.find("\x00")
        if nul >= 0:
            raise WhereError(f"parameter {number} contains a NUL character", field=field)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise WhereError(f"parameter {number} is not valid UTF-8", field=field) from None
        numbers[number] = value
    count = len(numbers)
    for expected in range(1, count + 1):
        if expected not in numbers:
            raise WhereError(
                f"parameters must be numbered sequentially from 1; {expected} is missing",
                field=field,
            )
    if needed > count:
        raise WhereError(f"parameter ${count + 1} was not provided", field=field)
    if count > needed:
        raise WhereError(f"parameter {needed + 1} is not used by the filter", field=field)
    return [numbers[number] for number in range(1, count + 1)]
