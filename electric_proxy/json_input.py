"""The one way the proxy reads JSON a client sent: bounded in size and in nesting depth.

``json.loads`` recurses once per ``[`` or ``{``, so a few thousand of them in a subset body
or in ``subset__params`` raise ``RecursionError`` (a 500, not a 400), and anything that
walks the result afterwards may recurse as deeply. Nothing the proxy accepts from a client
is nested more than a few levels, so the depth is checked before parsing, by counting
brackets outside strings, without recursion. ``NaN`` and ``Infinity`` are refused as well:
they are not JSON (RFC 8259) and Electric would not read them.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

from .errors import ElectricProxyError

__all__ = ["MAX_DEPTH", "JsonInputError", "load_client_json"]

#: Deeper than anything the shape protocol sends (a subset body is two levels).
MAX_DEPTH = 32
#: The default byte bound; callers with their own limit (a body size) pass it.
MAX_SIZE = 1 << 20

# A JSON string, escapes included; what is left once strings are removed is structure.
# The closing quote is optional so that an unterminated string ends the scan instead of
# being retried from every later quote (quadratic time on `"\\"\\"...`).
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_OPEN = b"[{"


class JsonInputError(ElectricProxyError, ValueError):
    """Why client JSON was refused, in words safe to send back (no input is quoted)."""


def _too_deep(raw: bytes, max_depth: int) -> bool:
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw))
    if len(brackets) <= max_depth:
        return False
    depth = 0
    for byte in brackets:
        depth += 1 if byte in _OPEN else -1
        if depth > max_depth:
            return True
    return False


def _no_constants(name: str) -> NoReturn:
    raise JsonInputError("NaN and Infinity are not JSON")


def load_client_json(
    raw: str | bytes, *, max_size: int = MAX_SIZE, max_depth: int = MAX_DEPTH
) -> Any:
    """Parse ``raw``; :class:`JsonInputError` when it is too large, too deep or not JSON."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data) > max_size:
        raise JsonInputError(f"the JSON is larger than {max_size} bytes")
    if _too_deep(data, max_depth):
        raise JsonInputError(f"the JSON is nested deeper than {max_depth} levels")
    try:
        return json.loads(data, parse_constant=_no_constants)
    except JsonInputError:
        raise
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise JsonInputError("not valid JSON") from None
