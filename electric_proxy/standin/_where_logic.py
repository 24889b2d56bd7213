"""SQL semantics at evaluation time: three-valued logic and the operator implementations.

`None` stands for NULL/UNKNOWN throughout, so every operator here either propagates it
(`_strict`) or follows Postgres's truth tables (`_and`, `_or`, `_not`). The tables map the
operator names the compiler resolves to these implementations.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final


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
