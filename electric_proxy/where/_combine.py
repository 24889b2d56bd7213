"""Joining the server and client filters into the one ``where`` sent upstream."""

from __future__ import annotations

import functools
from typing import Any, Final

from pglast import ast
from pglast.enums import BoolExprType

from ._client import ClientFilter
from ._errors import WhereError, _capture, _Rejected, _Rejection
from ._grammar import _Checker
from ._limits import _DEPTH_CEILING, Limits
from ._server import ServerFilter
from ._text import _WHERE_PREFIX, _parse_expression
from ._tree import _param_numbers, _round_trip, _walk

# combine() re-walks filters it is handed; these bounds only keep that walk finite, the
# caller's own Limits were applied when the filter was parsed.
_RECHECK_LIMITS: Final = Limits(
    max_length=1 << 30, max_depth=_DEPTH_CEILING, max_nodes=1 << 30, max_params=1 << 30
)


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
        recheck = _Checker(None, _RECHECK_LIMITS, len(_WHERE_PREFIX))
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
    result = _capture(_combine_cached, server, client)
    if isinstance(result, _Rejection):
        # A position would point into the normalised text, which the caller never wrote.
        raise WhereError(result.reason, field=field)
    return result
