"""Facts of the Electric shape protocol that the proxy relies on, in one place.

Sources: Electric sync-service 1.7.x and `@electric-sql/client` 1.5.x (see
`shared/reference/electric-sync-protocol.md` §0, §2, §3, §11).
"""

from __future__ import annotations

from typing import Final, Literal

from multidict import MultiMapping

#: Client parameters copied upstream as they are: they carry no SQL and no shape identity.
PASS_THROUGH_PARAMS: Final = frozenset(
    {
        "offset",
        "handle",
        "live",
        "live_sse",
        "experimental_live_sse",
        "cursor",
        "expired_handle",
        "log",
        "cache-buster",
    }
)

#: Subset paging: forwarded only by a policy that allows subsets for the shape.
SUBSET_PAGING_PARAMS: Final = frozenset({"subset__limit", "subset__offset"})

#: Client parameters that carry SQL: only a policy step may forward them, after validation.
CLIENT_FILTER_PARAMS: Final = frozenset(
    {"where", "subset__where", "subset__params", "subset__order_by"}
)

#: Sent by the TS client for its own bookkeeping and ignored by the server: dropped.
IGNORED_CLIENT_PARAMS: Final = frozenset({"subset__where_expr", "subset__order_by_expr"})

#: The shape definition and credentials: decided by the server side, never taken from a client.
SERVER_PARAMS: Final = frozenset(
    {
        "table",
        "columns",
        "where",
        "replica",
        "queryable_columns",
        "secret",
        "api_secret",
        "source_secret",
        "source_id",
    }
)

#: Keys the proxy reads from a client; a repeated one is ambiguous (Plug keeps the last
#: value, a naive check reads the first) and is refused.
SINGLE_VALUED_PARAMS: Final = (
    PASS_THROUGH_PARAMS | SUBSET_PAGING_PARAMS | CLIENT_FILTER_PARAMS | SERVER_PARAMS
)

#: Positional filter values arrive as ``params[1]=...``, ``params[2]=...``.
PARAMS_PREFIX: Final = "params["

#: RFC 9110 §7.6.1 hop-by-hop fields, plus the legacy ones still seen in the wild
#: (lower case, like every header-name set here).
HOP_BY_HOP_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

#: Request headers worth sending to Electric; everything else (Authorization, Cookie, Host,
#: identity headers) stays at the proxy.
FORWARDED_REQUEST_HEADERS: Final = frozenset(
    {"accept", "accept-encoding", "if-none-match", "traceparent", "tracestate"}
)

#: Forwarded request headers that label one request without changing Electric's answer:
#: the ``request_id`` step's ID (its default name) and W3C trace context. Requests that
#: differ only in these get the same bytes, so they never split a coalesced long-poll or a
#: shape-cache entry; the shared upstream request carries the first asker's values.
ANSWER_NEUTRAL_HEADERS: Final = frozenset({"x-request-id", "traceparent", "tracestate"})

#: Response headers the TS client reads; browsers only show them to script when exposed.
ELECTRIC_EXPOSED_HEADERS: Final = (
    "electric-cursor",
    "electric-handle",
    "electric-has-data",
    "electric-offset",
    "electric-schema",
    "electric-up-to-date",
    "electric-internal-known-error",
    "retry-after",
)

SHAPE_METHODS: Final = frozenset({"GET", "HEAD", "POST", "OPTIONS"})


LiveKind = Literal["long_poll", "sse"]


def live_kind(query: MultiMapping[str], accept: str = "") -> LiveKind | None:
    """Whether a request (its query and ``Accept``) is a held live one, and which kind.

    Shapes say ``live=true`` (SSE with ``live_sse``/``experimental_live_sse`` or ``Accept:
    text/event-stream``); Durable Streams say ``live=long-poll`` or ``live=sse``.
    """
    if "live" not in query:
        return None
    values = query.getall("live")
    if all(value == "false" for value in values):
        return None
    if (
        "sse" in values
        or query.get("live_sse", query.get("experimental_live_sse", "false")) != "false"
        or "text/event-stream" in accept
    ):
        return "sse"
    return "long_poll"


def positional_params(query: MultiMapping[str]) -> tuple[dict[str, str], bool]:
    """A query's ``params[n]`` values by ``n`` (``{"1": "acme"}``), and whether some key
    starts ``params[`` without closing: a policy ignores such a key, a token check refuses it.
    """
    params: dict[str, str] = {}
    unclosed = False
    for key, value in query.items():
        if key.startswith(PARAMS_PREFIX):
            if key.endswith("]"):
                params[key[len(PARAMS_PREFIX) : -1]] = value
            else:
                unclosed = True
    return params, unclosed
