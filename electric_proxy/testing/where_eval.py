"""Evaluate Electric shape `where` clauses against in-memory rows, the way the sync service does.

The fake upstream (`upstream.py`) needs to filter rows exactly like Electric so that proxy tests
observe real shape semantics: which rows a shape contains, when an update moves a row in or out,
and which clauses Electric refuses (and with which `At location N: ...` message). Electric parses
`SELECT 1 WHERE <clause>` with libpg_query and walks an allow-listed AST; `pglast` wraps the same
parser, so this module does the same walk and compiles the tree into closures once per shape.

Values follow Postgres semantics: untyped literals and `$n` parameters take their type from the
expression they meet (a parameter compared with an `int8` column becomes an integer), and NULL
propagates through SQL three-valued logic (`None` stands for UNKNOWN).
"""

from __future__ import annotations

import functools
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Final, cast

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError, parse_sql_json
from pglast.stream import RawStream

Row = Mapping[str, object]
Evaluator = Callable[[Row], object]

UNKNOWN: Final = "unknown"
_PREFIX: Final = "SELECT 1 WHERE "
INT_TYPES: Final = frozenset({"int2", "int4", "int8"})
FLOAT_TYPES: Final = frozenset({"float4", "float8", "numeric"})
NUMERIC_TYPES: Final = INT_TYPES | FLOAT_TYPES
TEXT_TYPES: Final = frozenset({"text", "varchar", "bpchar", "name"})
TEMPORAL_TYPES: Final = frozenset({"date", "timestamp", "timestamptz"})
#: The cast targets Electric accepts (`Electric.Postgres.supported_types/0`); the opaque ones
#: (bytea, interval, json, jsonb) are carried as text and only compared for equality here.
CASTABLE_TYPES: Final = (
    NUMERIC_TYPES
    | TEXT_TYPES
    | TEMPORAL_TYPES
    | {"bool", "uuid", "time", "bytea", "interval", "json", "jsonb"}
)

_TYPE_ALIASES: Final = {
    "integer": "int4",
    "int": "int4",
    "bigint": "int8",
    "smallint": "int2",
    "serial": "int4",
    "bigserial": "int8",
    "boolean": "bool",
    "real": "float4",
    "double precision": "float8",
    "float": "float8",
    "decimal": "numeric",
    "character varying": "varchar",
    "character": "bpchar",
    "char": "bpchar",
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
    "time without time zone": "time",
}
_TRUE_WORDS: Final = frozenset({"t", "true", "y", "yes", "on", "1"})
_FALSE_WORDS: Final = frozenset({"f", "false", "n", "no", "off", "0"})
_ARRAY_QUOTE_NEEDED: Final = re.compile(r'[\s,{}"\\]')


class WhereError(ValueError):
    """A clause Electric would refuse; the message is the text Electric puts in `errors.where`."""


def normalize_type(name: str) -> str:
    """Map the spellings people write in a column definition to the names Electric reports."""
    base = name.strip().lower()
    suffix = ""
    while base.endswith("[]"):
        base, suffix = base[:-2].strip(), suffix + "[]"
    base = re.sub(r"\(.*\)$", "", base).strip()
    return _TYPE_ALIASES.get(base, base) + suffix


def _element_type(pg_type: str) -> str:
    return pg_type[:-2] if pg_type.endswith("[]") else pg_type


def _family(pg_type: str) -> str:
    if pg_type.endswith("[]"):
        return _family(pg_type[:-2]) + "[]"
    if pg_type in NUMERIC_TYPES:
        return "numeric"
    if pg_type in TEXT_TYPES:
        return "text"
    if pg_type in TEMPORAL_TYPES:
        return "temporal"
    return pg_type


# ---------------------------------------------------------------------------------------------
# Value codecs: Python value <-> canonical evaluation value <-> Postgres text output.
# ---------------------------------------------------------------------------------------------


def _parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError(text)


def _parse_datetime(text: str, aware: bool) -> datetime:
    stamp = datetime.fromisoformat(text.strip())
    if aware:
        return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
    return stamp.replace(tzinfo=None)


def _parse_array(text: str, element: str) -> list[object]:
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise ValueError(text)
    items: list[object] = []
    inner, pos = body[1:-1], 0
    while pos < len(inner):
        if inner[pos] == '"':
            end, chars = pos + 1, []
            while inner[end] != '"':
                if inner[end] == "\\":
                    end += 1
                chars.append(inner[end])
                end += 1
            items.append(parse_text("".join(chars), element))
            pos = end + 2
        else:
            end = inner.find(",", pos)
            end = len(inner) if end < 0 else end
            raw = inner[pos:end].strip()
            items.append(None if raw.upper() == "NULL" else parse_text(raw, element))
            pos = end + 1
    return items


def parse_text(text: str, pg_type: str) -> object:
    """Read a Postgres text-format value (a literal or a `params[n]` string) as `pg_type`."""
    if pg_type.endswith("[]"):
        return _parse_array(text, pg_type[:-2])
    if pg_type in INT_TYPES:
        return int(text.strip())
    if pg_type in FLOAT_TYPES:
        return float(text.strip())
    if pg_type == "bool":
        return _parse_bool(text)
    if pg_type == "uuid":
        return str(uuid.UUID(text.strip()))
    if pg_type == "date":
        return date.fromisoformat(text.strip())
    if pg_type == "time":
        return time.fromisoformat(text.strip())
    if pg_type in ("timestamp", "timestamptz"):
        return _parse_datetime(text, pg_type == "timestamptz")
    return text


def coerce(value: object, pg_type: str) -> object:
    """Turn a value handed to the fake (Python object or text) into its evaluation form."""
    if value is None:
        return None
    if pg_type.endswith("[]"):
        if isinstance(value, str):
            return _parse_array(value, pg_type[:-2])
        return [coerce(item, pg_type[:-2]) for item in cast(Iterable[object], value)]
    if isinstance(value, str) and pg_type not in ("json", "jsonb"):
        return parse_text(value, pg_type)
    if pg_type in INT_TYPES:
        return int(cast(int, value))
    if pg_type in FLOAT_TYPES:
        return float(cast(float, value))
    if pg_type == "bool":
        return bool(value)
    if pg_type == "uuid":
        return str(value).lower()
    if pg_type in ("timestamp", "timestamptz") and isinstance(value, datetime):
        return _parse_datetime(value.isoformat(), pg_type == "timestamptz")
    if pg_type in TEXT_TYPES:
        return str(value)
    return value


def _trim_fraction(text: str) -> str:
    if "." not in text:
        return text
    head, _, tail = text.partition(".")
    digits = tail.rstrip("0")
    return f"{head}.{digits}" if digits else head


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _array_item_text(value: object, element: str) -> str:
    text = to_text(value, element)
    if text is None:
        return "NULL"
    if text == "" or text.upper() == "NULL" or _ARRAY_QUOTE_NEEDED.search(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def to_text(value: object, pg_type: str) -> str | None:
    """Render a value the way Electric serialises it: Postgres text output, `null` for NULL."""
    if value is None:
        return None
    if pg_type.endswith("[]") and isinstance(value, list):
        items = cast(list[object], value)
        return "{" + ",".join(_array_item_text(item, pg_type[:-2]) for item in items) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            utc = value.astimezone(UTC).replace(tzinfo=None)
            return _trim_fraction(utc.isoformat(sep=" ")) + "+00"
        return _trim_fraction(value.isoformat(sep=" "))
    if isinstance(value, time):
        return _trim_fraction(value.isoformat())
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _convert(value: object, source: str, target: str) -> object:
    """Apply a cast between two known types at evaluation time (NULL stays NULL)."""
    if value is None or source == target:
        return value
    if source.endswith("[]") and target.endswith("[]") and isinstance(value, list):
        items = cast(list[object], value)
        return [_convert(item, source[:-2], target[:-2]) for item in items]
    if target in TEMPORAL_TYPES and isinstance(value, date):
        stamp = value if isinstance(value, datetime) else datetime.combine(value, time())
        if target == "date":
            return stamp.date()
        if target == "timestamptz":
            return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp
        return stamp.astimezone(UTC).replace(tzinfo=None) if stamp.tzinfo else stamp
    if target in INT_TYPES and isinstance(value, float):
        return math.floor(abs(value) + 0.5) * (1 if value >= 0 else -1)
    if target in INT_TYPES and isinstance(value, bool):
        return int(value)
    if target in FLOAT_TYPES and isinstance(value, (int, float)):
        return float(value)
    if target == "bool" and isinstance(value, int):
        return value != 0
    text = to_text(value, source)
    return None if text is None else parse_text(text, target)


# ---------------------------------------------------------------------------------------------
# Three-valued logic and operators.
# ---------------------------------------------------------------------------------------------


def _and(values: Iterable[object]) -> bool | None:
    result: bool | None = True
    for value in values:
        if value is False:
            return False
        if value is None:
            result = None
    return result


def _or(values: Iterable[object]) -> bool | None:
    result: bool | None = False
    for value in values:
        if value is True:
            return True
        if value is None:
            result = None
    return result


def _not(value: object) -> bool | None:
    return None if value is None else not value


def _strict(fn: Callable[[Any, Any], object]) -> Callable[[object, object], object]:
    def apply(left: object, right: object) -> object:
        if left is None or right is None:
            return None
        return fn(left, right)

    return apply


@functools.lru_cache(maxsize=256)
def _like_pattern(pattern: str, insensitive: bool) -> re.Pattern[str]:
    parts: list[str] = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            parts.append(re.escape(next(chars, "\\")))
        elif char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if insensitive else 0))


def _like(insensitive: bool, negate: bool) -> Callable[[object, object], object]:
    def match(text: str, pattern: str) -> bool:
        return (_like_pattern(pattern, insensitive).fullmatch(text) is not None) != negate

    return _strict(match)


def _divide(left: float, right: float) -> object:
    if right == 0:
        return None
    if isinstance(left, int) and isinstance(right, int):
        quotient = abs(left) // abs(right)
        return quotient if (left >= 0) == (right >= 0) else -quotient
    return left / right


def _modulo(left: float, right: float) -> object:
    if right == 0:
        return None
    if isinstance(left, int) and isinstance(right, int):
        remainder = abs(left) % abs(right)
        return remainder if left >= 0 else -remainder
    return math.fmod(left, right)


_COMPARISONS: Final[Mapping[str, Callable[[Any, Any], bool]]] = {
    "=": lambda a, b: bool(a == b),
    "<>": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    ">": lambda a, b: bool(a > b),
    "<=": lambda a, b: bool(a <= b),
    ">=": lambda a, b: bool(a >= b),
}
_LIKES: Final = {
    "~~": (False, False),
    "!~~": (False, True),
    "~~*": (True, False),
    "!~~*": (True, True),
}
_ARITHMETIC: Final[Mapping[str, Callable[[Any, Any], object]]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _divide,
    "%": _modulo,
}
_ARRAY_OPS: Final[Mapping[str, Callable[[Any, Any], object]]] = {
    "@>": lambda a, b: all(item in a for item in b),
    "<@": lambda a, b: all(item in b for item in a),
    "&&": lambda a, b: any(item in b for item in a),
}


# ---------------------------------------------------------------------------------------------
# Compilation.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Expr:
    """A compiled sub-expression: how to compute it, and the Postgres type it has."""

    fn: Evaluator
    type: str
    location: int
    describe: str = ""
    literal: str | None = None
    param: int | None = None


@dataclass(frozen=True)
class CompiledWhere:
    """A shape's where clause, parsed and type-checked once, ready to test rows."""

    sql: str
    _fn: Evaluator

    def matches(self, row: Row) -> bool:
        """Only TRUE selects a row: FALSE and UNKNOWN (NULL) both leave it out."""
        return self._fn(row) is True


def _identifier(parts: Sequence[str]) -> str:
    return ".".join(
        part if re.fullmatch(r"[a-z_][a-z0-9_]*", part) else '"' + part.replace('"', '""') + '"'
        for part in parts
    )


def _location(node: Any) -> int:
    raw = getattr(node, "location", None)
    return max(int(raw) - len(_PREFIX), 0) if isinstance(raw, int) and raw >= 0 else 0


def _at(node_or_location: Any, message: str) -> WhereError:
    location = (
        node_or_location if isinstance(node_or_location, int) else _location(node_or_location)
    )
    return WhereError(f"At location {location}: {message}")


def _names(nodes: Iterable[Any] | None) -> list[str]:
    return [str(node.sval) for node in nodes or () if isinstance(node, ast.String)]


class _Compiler:
    """Walks the pglast tree once, resolving types, and returns closures over rows."""

    def __init__(
        self,
        columns: Mapping[str, str],
        params: Mapping[str, str],
        const_locations: Mapping[int, int],
    ) -> None:
        self.columns = columns
        self.params = params
        self.const_locations = const_locations
        self.param_types: dict[int, str] = {}
        self.used: set[int] = set()

    # -- type plumbing --------------------------------------------------------------------

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

    def common_type(self, exprs: Sequence[_Expr], location: int) -> str:
        typed = [expr.type for expr in exprs if expr.type != UNKNOWN]
        if not typed:
            return "text"
        first = typed[0]
        if any(_family(other) != _family(first) for other in typed):
            raise _at(location, "Could not select an operator overload")
        if all(other == first for other in typed):
            return first
        family = _family(first)
        if family.endswith("[]"):
            elements = [_Expr(_no_row, _element_type(t), location) for t in typed]
            return self.common_type(elements, location) + "[]"
        if family == "numeric":
            floats = [t for t in typed if t in FLOAT_TYPES]
            return ("numeric" if "numeric" in floats else "float8") if floats else "int8"
        if family == "temporal":
            return "timestamptz" if "timestamptz" in typed else "timestamp"
        return "text" if family == "text" else first

    def unify(self, exprs: Sequence[_Expr], location: int) -> list[_Expr]:
        target = self.common_type(exprs, location)
        return [self.coerce_to(expr, target) for expr in exprs]

    def as_bool(self, expr: _Expr) -> _Expr:
        if expr.type == "bool" or expr.type == UNKNOWN:
            return self.coerce_to(expr, "bool")
        raise _at(expr.location, f"{expr.describe or expr.type} is not castable to bool")

    # -- dispatch -------------------------------------------------------------------------

    def compile(self, node: Any) -> _Expr:
        handler = getattr(self, f"_n_{type(node).__name__}", None)
        if isinstance(node, ast.SubLink):
            raise WhereError("Subqueries are not supported")
        if handler is None:
            raise _at(node, f"{type(node).__name__} is not supported in this context")
        return cast(_Expr, handler(node))

    def _n_A_Const(self, node: Any) -> _Expr:
        location = max(self.const_locations.get(id(node), 0) - len(_PREFIX), 0)
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
        names = _names(node.typeName.names)
        if names and names[0] == "pg_catalog":
            names = names[1:]
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
        names = _names(node.funcname)
        if names and names[0] == "pg_catalog":
            names = names[1:]
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

    # -- operators ------------------------------------------------------------------------

    def operator(
        self, name: str, left: str, right: str, location: int
    ) -> tuple[Callable[[object, object], object], str, str, str]:
        """Pick an operator overload for two operand types: (impl, left, right, result)."""
        if name in _COMPARISONS:
            target = self.common_type(
                [_Expr(_no_row, left, location), _Expr(_no_row, right, location)], location
            )
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
            target = self.common_type([_Expr(_no_row, side, location) for side in typed], location)
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

    def binary(self, name: str, left: _Expr, right: _Expr, location: int) -> _Expr:
        impl, left_type, right_type, result = self.operator(name, left.type, right.type, location)
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

    def a_like(self, node: Any, name: str, location: int) -> _Expr:
        return self.binary(name, self.compile(node.lexpr), self.compile(node.rexpr), location)

    def a_any_all(self, node: Any, name: str, location: int) -> _Expr:
        left = self.compile(node.lexpr)
        array = self.compile(node.rexpr)
        if array.type != UNKNOWN and not array.type.endswith("[]"):
            raise _at(array.location, "argument of ANY must be an array")
        element = _element_type(array.type) if array.type != UNKNOWN else UNKNOWN
        impl, left_type, element_type, result = self.operator(name, left.type, element, location)
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


def _no_row(_row: Row) -> object:
    return None


_A_EXPR_HANDLERS: Final[Mapping[str, Callable[[_Compiler, Any, str, int], _Expr]]] = {
    "AEXPR_OP": _Compiler.a_op,
    "AEXPR_LIKE": _Compiler.a_like,
    "AEXPR_ILIKE": _Compiler.a_like,
    "AEXPR_IN": _Compiler.a_in,
    "AEXPR_DISTINCT": _Compiler.a_distinct,
    "AEXPR_NOT_DISTINCT": _Compiler.a_distinct,
    "AEXPR_BETWEEN": _Compiler.a_between,
    "AEXPR_NOT_BETWEEN": _Compiler.a_between,
    "AEXPR_BETWEEN_SYM": _Compiler.a_between,
    "AEXPR_NOT_BETWEEN_SYM": _Compiler.a_between,
    "AEXPR_OP_ANY": _Compiler.a_any_all,
    "AEXPR_OP_ALL": _Compiler.a_any_all,
}


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
