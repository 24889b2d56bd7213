"""The untrusted client filter and the parameter values that go with it."""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from ._errors import WhereError, _capture, _Rejected, _Rejection, _unwrap
from ._grammar import _Checker, _is_boolean_shaped
from ._limits import DEFAULT_LIMITS, Limits
from ._row_safety import RowSafety, like_pattern_problem
from ._text import _WHERE_PREFIX, _check_lexemes, _check_text, _node_position, _parse_clause
from ._tree import _round_trip
from ._types import ColumnTypes, column_types

_PARAM_KEY: Final = re.compile(r"[1-9][0-9]{0,5}")


@dataclass(frozen=True)
class ClientFilter:
    """A validated, normalised client filter; cached and shared, hence immutable.

    ``sql`` uses the client's own numbering ``$1..$max_param`` (without gaps);
    :func:`combine` shifts it past the server's parameters. ``columns`` lists the column
    names it reads, for callers that log or meter them. ``like_params`` are the client's
    ``$n`` (client numbering) used as LIKE patterns, whose values :func:`check_params` must
    check (leakproof mode only; see :mod:`._row_safety`).
    """

    sql: str
    max_param: int
    columns: frozenset[str] = frozenset()
    like_params: frozenset[int] = frozenset()


@functools.lru_cache(maxsize=2048)
def _parse_client_cached(
    text: str, columns: ColumnTypes | None, limits: Limits, leakproof: bool
) -> ClientFilter | _Rejection:
    return _capture(_parse_client, text, columns, limits, leakproof)


def _parse_client(
    text: str, columns: ColumnTypes | None, limits: Limits, leakproof: bool
) -> ClientFilter:
    text = _check_text(text, limits.max_length)
    offset = len(_WHERE_PREFIX)
    root = _parse_clause(_WHERE_PREFIX, text, "whereClause", _check_lexemes)
    names = None if columns is None else frozenset(name for name, _ in columns)
    checker = _Checker(names, limits, offset)
    checker.visit(root, 1, None)
    if not _is_boolean_shaped(root):
        raise _Rejected(
            "must be a condition (a comparison, IN, LIKE, IS NULL, AND/OR/NOT ...)",
            _node_position(root, offset, 0),
        )
    highest = max(checker.params, default=0)
    missing = sorted(set(range(1, highest + 1)) - checker.params)
    if missing:
        raise _Rejected(
            f"parameter ${missing[0]} is never used; number parameters $1..${highest} without gaps"
        )
    like_params: frozenset[int] = frozenset()
    if leakproof:
        safety = RowSafety(dict(columns or ()), offset)
        safety.condition(root, _node_position(root, offset, 0))
        like_params = frozenset(safety.like_params)
    return ClientFilter(
        sql=_round_trip(root),
        max_param=highest,
        columns=frozenset(checker.used_columns),
        like_params=like_params,
    )


def parse_client_where(
    text: str,
    *,
    columns: Iterable[str] | Mapping[str, str | None] | None,
    limits: Limits = DEFAULT_LIMITS,
    field: str = "where",
    leakproof: bool = True,
) -> ClientFilter:
    """Validate an untrusted filter (``where`` or ``subset__where``) from a client.

    ``columns=None`` lets the filter name any column (the policy does not restrict them);
    otherwise only those bare names, compared exactly as Postgres folds them (unquoted
    names are lower-cased). A mapping gives each column its Postgres type (``"text"``,
    ``"int8"``, ``"timestamptz"``, ``"text[]"`` ...); a plain collection of names leaves
    them untyped.

    ``leakproof`` (the default) additionally requires that everything Postgres may run per
    row is marked leakproof in its catalogue (:mod:`._row_safety` says why and how):
    Postgres may evaluate the client's conjunct on rows the server conjunct rejects, and an
    error is then an oracle about rows of other tenants. That needs the columns' types; an
    untyped column may only be tested with ``IS [NOT] NULL``. LIKE patterns are checked
    here when they are literals and listed in :attr:`ClientFilter.like_params` when they
    are parameters. Pass ``leakproof=False`` to accept Electric's whole grammar.

    Refusals are cached as well as successes, so repeating a bad filter is as cheap as
    repeating a good one.
    """
    try:
        typed = column_types(columns)
    except ValueError as exc:
        raise WhereError(str(exc), field="columns") from None
    if not isinstance(text, str):
        raise WhereError("must be a string", field=field)
    return _unwrap(_parse_client_cached(text, typed, limits, leakproof), field)


def check_params(
    params: Mapping[str, str],
    *,
    needed: int,
    field: str = "params",
    limits: Limits = DEFAULT_LIMITS,
    patterns: Collection[int] = (),
) -> list[str]:
    """Validate a client's parameter map and return the values in ``$1..$N`` order.

    Keys must be canonical decimal numbers (``"01"`` and ``"1"`` would both mean ``$1`` to
    Electric, and two values for one parameter is an ambiguity an attacker can exploit).
    Exactly the parameters the filter uses must be present: a missing one would fail
    upstream, an extra one would only multiply shapes. ``patterns`` are the parameters the
    filter uses as LIKE patterns (:attr:`ClientFilter.like_params`); a value that would make
    LIKE raise on some rows and not others is refused.
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
    for number in sorted(patterns):
        problem = like_pattern_problem(numbers[number]) if number in numbers else None
        if problem is not None:
            raise WhereError(f"parameter {number}: {problem}", field=field)
    return [numbers[number] for number in range(1, count + 1)]
