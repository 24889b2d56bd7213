"""The shape API's wire values: offsets, identifiers, and how request parameters decode.

Electric runs on Plug and Ecto, and clients and the proxy depend on their exact quirks (the
last of a repeated query key wins, a POST body overrides the query, `"1"` casts to true), so
these helpers reproduce them rather than the more usual Python conventions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from multidict import MultiDictProxy

#: Body keys that describe a subset snapshot rather than the shape (`merge_body_params/2`).
SUBSET_KEYS: Final = frozenset(
    {"where", "order_by", "limit", "offset", "params", "where_expr", "order_by_expr"}
)
#: The op position written `inf`: past every operation of its transaction.
OP_INF: Final = 2**63 - 1

Offset = tuple[int, int]
BEFORE_ALL: Final[Offset] = (-1, 0)
_OFFSET_RE: Final = re.compile(r"(\d+)_(\d+|inf)")
_NESTED_KEY: Final = re.compile(r"([^\[\]]+)\[([^\[\]]*)\]")
_UNQUOTED_IDENT: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def format_offset(offset: Offset) -> str:
    """`-1` or `<tx>_<op>`, with `inf` for the open-ended op position."""
    if offset == BEFORE_ALL:
        return "-1"
    tx, op = offset
    return f"{tx}_{'inf' if op == OP_INF else op}"


def parse_offset(text: str) -> Offset | None:
    if text == "-1":
        return BEFORE_ALL
    match = _OFFSET_RE.fullmatch(text)
    if match is None:
        return None
    op = match.group(2)
    return int(match.group(1)), OP_INF if op == "inf" else int(op)


def _split_unquoted(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _parse_identifier(ident: str) -> tuple[str | None, str | None]:
    """Electric's `Identifiers.parse/1`: (name, None) or (None, error message)."""
    if len(ident) >= 2 and ident.startswith('"') and ident.endswith('"'):
        inner = ident[1:-1]
        if not inner:
            return None, "Invalid zero-length delimited identifier"
        if '"' in inner.replace('""', ""):
            return None, f"Invalid identifier with unescaped quote: {inner}"
        return inner.replace('""', '"'), None
    if not ident:
        return None, "Invalid zero-length delimited identifier"
    if not _UNQUOTED_IDENT.fullmatch(ident):
        return None, f"Invalid unquoted identifier contains special characters: {ident}"
    return ident.lower(), None


def _parse_relation(text: str) -> tuple[tuple[str, str] | None, str | None]:
    parts = _split_unquoted(text, ".")
    if len(parts) > 2:
        return None, f"Invalid relation name, too many dots: {text}"
    names: list[str] = []
    for part in parts:
        name, error = _parse_identifier(part)
        if name is None:
            return None, error
        names.append(name)
    return ((names[0], names[1]) if len(names) == 2 else ("public", names[0])), None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _collect_query(query: Mapping[str, str] | MultiDictProxy[str]) -> dict[str, object]:
    """Decode a query the way Plug does: nested `params[1]` maps, and the LAST repeat wins."""
    params: dict[str, object] = {}
    items = query.items()
    for key, value in items:
        if key.startswith("subset__"):
            _nest(params, "subset", key.removeprefix("subset__"), value)
        elif match := _NESTED_KEY.fullmatch(key):
            _nest(params, match.group(1), match.group(2), value)
        else:
            params[key] = value
    return params


def _nest(params: dict[str, object], outer: str, inner: str, value: object) -> None:
    current = params.get(outer)
    if not isinstance(current, dict):
        current = {}
        params[outer] = current
    current[inner] = value


def _merge_body(query: dict[str, object], body: dict[str, object]) -> dict[str, object]:
    """Electric's `merge_body_params/2` (§9.2), hazard included, so proxy tests can observe it.

    With a `subset` map in the body the whole body is merged over the query (body `table`,
    `where`, `params`... replace the query's). Otherwise subset keys move under `subset` and
    every other body key still replaces the query value.
    """
    query_subset = query.get("subset")
    base_subset = dict(query_subset) if isinstance(query_subset, dict) else {}
    body_subset = body.get("subset")
    if isinstance(body_subset, dict):
        merged = {**query, **body}
        merged["subset"] = {**base_subset, **body_subset}
        return merged
    merged = dict(query)
    for key, value in body.items():
        if key in SUBSET_KEYS:
            base_subset[key] = value
        else:
            merged[key] = value
    if base_subset:
        merged["subset"] = base_subset
    return merged


def _cast_bool(value: object) -> bool | None:
    """Ecto's boolean cast; `None` means the value is invalid."""
    if isinstance(value, bool):
        return value
    return {"true": True, "1": True, "false": False, "0": False}.get(str(value))


def _cast_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    return None
