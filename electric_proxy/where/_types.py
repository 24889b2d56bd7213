"""Column types a policy may declare for client filters: Electric's types, by Postgres name."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

# Electric's supported column types (its cast list), spelled as Postgres's catalogue does.
BASE_TYPES: Final = frozenset(
    {
        "bool",
        "bytea",
        "date",
        "float4",
        "float8",
        "int2",
        "int4",
        "int8",
        "interval",
        "jsonb",
        "numeric",
        "text",
        "time",
        "timestamp",
        "timestamptz",
        "uuid",
        "varchar",
    }
)
TEXT_TYPES: Final = frozenset({"text", "varchar"})

# SQL's long spellings, so a config may say `integer` or `timestamp with time zone`.
_ALIASES: Final = {
    "boolean": "bool",
    "smallint": "int2",
    "integer": "int4",
    "int": "int4",
    "bigint": "int8",
    "real": "float4",
    "double precision": "float8",
    "decimal": "numeric",
    "character varying": "varchar",
    "time without time zone": "time",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
}

# A filter's columns: name -> declared type, or None when the policy gave only the name.
ColumnTypes = tuple[tuple[str, str | None], ...]


def canonical_type(name: str) -> str:
    """``"integer[]"`` -> ``"int4[]"``; ValueError naming the accepted types otherwise."""
    spelled = " ".join(str(name).lower().split())
    array = spelled.endswith("[]")
    base = spelled[:-2].rstrip() if array else spelled
    base = _ALIASES.get(base, base)
    if base not in BASE_TYPES:
        raise ValueError(
            f"unknown column type {name!r}; use one of {', '.join(sorted(BASE_TYPES))}"
            " (or an array of one, e.g. 'text[]')"
        )
    return base + "[]" if array else base


def column_types(columns: Iterable[str] | Mapping[str, str | None] | None) -> ColumnTypes | None:
    """The allowed columns in one hashable, canonical form (so equal policies share caches)."""
    if columns is None:
        return None
    if isinstance(columns, Mapping):
        pairs = {
            str(name): None if kind is None else canonical_type(kind)
            for name, kind in columns.items()
        }
    else:
        pairs = {str(name): None for name in columns}
    return tuple(sorted(pairs.items()))
