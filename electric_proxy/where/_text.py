"""Input checks, and lexing and parsing with Postgres's own lexer and parser (via pglast).

Every entry point wraps the caller's text in a ``SELECT 1`` so that libpg_query parses it in
the position Electric will; positions are reported relative to the caller's own text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from pglast import ast, parse_sql
from pglast.enums import SetOperation
from pglast.parser import ParseError, scan

from ._errors import _Rejected

_WHERE_PREFIX: Final = "SELECT 1 WHERE "

_SEMICOLON: Final = "';' is not allowed: a filter is a single expression"

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


def _column_set(columns: Iterable[str] | None) -> frozenset[str] | None:
    """The allowed columns as a frozenset, so equal allow-lists share cache entries."""
    if columns is not None and not isinstance(columns, frozenset):
        return frozenset(columns)
    return columns


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


def _node_position(node: Any, offset: int, fallback: int | None) -> int | None:
    """Where ``node`` starts in the caller's text, or ``fallback`` if its location is unusable."""
    location = getattr(node, "location", None)
    if isinstance(location, int) and location >= offset:
        return location - offset
    return fallback


def _parse_error(exc: ParseError, offset: int, text: str) -> _Rejected:
    """Translate a libpg_query error; its location counts characters of the wrapped text."""
    message = str(exc.args[0]) if exc.args else "syntax error"
    location = exc.args[1] if len(exc.args) > 1 else None
    if not isinstance(location, int):
        return _Rejected(message, len(text))
    return _Rejected(message, max(0, min(location - offset, len(text))))


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
            raise _Rejected(_SEMICOLON, position)
        if token.name == "SCONST" and text[position] == "$":
            raise _Rejected("dollar-quoted strings are not allowed", position)


def _check_semicolons(tokens: Sequence[Any], offset: int, text: str) -> None:
    """Refuse ``;``: a trailing one still parses as a single statement, so only tokens show it."""
    for token in tokens:
        if token.name == "ASCII_59":
            raise _Rejected(_SEMICOLON, token.start - offset)


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


def _parse_clause(
    prefix: str,
    text: str,
    clause: str,
    check: Callable[[Sequence[Any], int, str], None] | None = None,
) -> Any:
    """Parse ``prefix + text`` as one plain ``SELECT 1`` carrying only ``clause``; return it.

    ``check``, if given, sees the caller's tokens before anything is parsed. Every attribute
    of the statement is inspected, not just the known dangerous ones, so a clause added by a
    future Postgres release is refused rather than ignored.
    """
    offset = len(prefix)
    wrapped = prefix + text
    tokens = _tokens(wrapped, offset, text)
    if check is not None:
        check(tokens, offset, text)
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
        if attribute in (clause, "targetList"):
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
    parsed = getattr(statement, clause)
    if parsed is None:
        raise _Rejected("is not a single expression")
    return parsed


def _parse_expression(sql: str) -> Any:
    """Parse already-normalised filter text back into its tree (no client-facing checks)."""
    return _parse_clause(_WHERE_PREFIX, sql, "whereClause", _check_semicolons)
