"""Postgres types for the where evaluator: names, families, and the value codecs.

Rows hold *evaluation values* (ints, floats, `datetime`s, lists...) so that comparisons and
arithmetic behave like Postgres; Electric sends and receives Postgres *text output*. The codecs
here convert between the Python values a test hands the fake, the evaluation form, and that
text, and apply the casts the compiler resolves.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from typing import Final, cast

#: The type of an untyped literal or `$n` until the expression it meets gives it one.
UNKNOWN: Final = "unknown"
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
    if isinstance(value, str) and pg_type not in ("json", "jsonb"):
        return parse_text(value, pg_type)
    if pg_type.endswith("[]"):
        return [coerce(item, pg_type[:-2]) for item in cast(Iterable[object], value)]
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
