"""Syntax trees back to text, with proof that the text means the tree; parameter bookkeeping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast
from pglast.stream import RawStream

from ._errors import _Rejected
from ._text import _parse_expression


def _deparse(node: Any) -> str:
    """Deparse with pglast; any failure is a refusal, never a half-written filter."""
    try:
        return str(RawStream()(node))
    except Exception:
        raise _Rejected("could not be normalised") from None


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
