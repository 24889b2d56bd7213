"""Row filters: the trusted server filter, the untrusted client filter, and their combination.

The proxy decides the shape server-side, so what Electric receives as ``where`` must never
select more rows than the policy's server filter allows. Everything here follows from that:

* Client text is parsed with Postgres's own parser (libpg_query via pglast, the parser family
  Electric uses), never inspected with regular expressions or bracket counting, because any
  lexical trick the checker misunderstands (dollar quotes, ``E''`` escapes, nested comments)
  is a break-out once the text is pasted next to the server filter.
* The parsed tree is checked against an allow-list of node types, operators, functions and
  casts (the subset Electric itself evaluates), so subqueries and side channels never reach
  Electric even where Electric would accept them.
* In leakproof mode (the default) everything Postgres may run per row must be marked
  leakproof in Postgres's own catalogue (``_leakproof.py``, generated from a real server),
  so a client filter cannot fail on, and so reveal, rows the server filter excludes; see
  ``_row_safety.py``.
* The server and client filters are combined as a syntax tree, ``AND(server, client)``, and
  deparsed. The deparsed text is parsed again and must give back exactly the tree that was
  built; if it does not, the request is refused rather than sent.
* User values only ever travel as positional parameters; the client's ``$n`` are shifted past
  the server's.

Parsing results are cached and immutable so that a client repeating a filter costs a dict
lookup, and so that nothing a request does can alter what a later request gets.
"""

from ._client import ClientFilter, check_params, parse_client_where
from ._combine import combine
from ._errors import WhereError
from ._ident import quote_ident, split_identifiers
from ._limits import DEFAULT_LIMITS, Limits
from ._order import parse_order_by
from ._server import ServerFilter
from ._types import canonical_type

__all__ = [
    "DEFAULT_LIMITS",
    "ClientFilter",
    "Limits",
    "ServerFilter",
    "WhereError",
    "canonical_type",
    "check_params",
    "combine",
    "parse_client_where",
    "parse_order_by",
    "quote_ident",
    "split_identifiers",
]
