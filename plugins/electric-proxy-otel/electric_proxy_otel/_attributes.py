"""Span attribute names, and the only functions that turn request data into attribute values.

Names come from the stable HTTP semantic conventions, spelled out here rather than imported
from the (pre-1.0) ``opentelemetry-semantic-conventions`` package. The proxy's own
attributes live under ``electric_proxy.``.

Everything recorded is chosen, never copied wholesale: no header, no query string, no body.
Client values (``handle``, ``offset``) are kept only when they have the shape Electric gives
them, so a client cannot write arbitrary text into a trace.
"""

from __future__ import annotations

import re
from typing import Final

from multidict import MultiMapping
from yarl import URL

HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_REQUEST_METHOD_ORIGINAL: Final = "http.request.method_original"
HTTP_ROUTE: Final = "http.route"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
URL_PATH: Final = "url.path"
URL_SCHEME: Final = "url.scheme"
URL_FULL: Final = "url.full"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
NETWORK_PROTOCOL_VERSION: Final = "network.protocol.version"
ERROR_TYPE: Final = "error.type"
ENDUSER_ID: Final = "enduser.id"

REQUEST_ID: Final = "electric_proxy.request_id"
SHAPE_HANDLE: Final = "electric_proxy.shape.handle"
SHAPE_OFFSET: Final = "electric_proxy.shape.offset"
SHAPE_LIVE: Final = "electric_proxy.shape.live"
SHAPE_LIVE_SSE: Final = "electric_proxy.shape.live_sse"

#: RFC 9110 methods plus PATCH; anything else is ``_OTHER`` (and ``HTTP`` in span names).
KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)

_HANDLE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_OFFSET = re.compile(r"-1|now|[0-9]{1,20}_[0-9]{1,20}")
_SSE_PARAMS = ("live_sse", "experimental_live_sse")

Attributes = dict[str, str | bool | int]


def method_attributes(method: str) -> tuple[str, Attributes]:
    """The span name's method part and the method attributes."""
    if method in KNOWN_METHODS:
        return method, {HTTP_REQUEST_METHOD: method}
    return "HTTP", {HTTP_REQUEST_METHOD: "_OTHER", HTTP_REQUEST_METHOD_ORIGINAL: method[:64]}


def _single(query: MultiMapping[str], key: str) -> str | None:
    """The value of a key given exactly once; a repeated key is ambiguous and not recorded."""
    values = query.getall(key, ())
    return values[0] if len(values) == 1 else None


def shape_attributes(query: MultiMapping[str]) -> Attributes:
    """Where the client is in the shape log: its handle, offset and live mode.

    Only these protocol parameters are read; ``where``, ``params[n]``, ``columns`` and the
    rest of the query never are.
    """
    found: Attributes = {}
    handle = _single(query, "handle")
    if handle is not None and _HANDLE.fullmatch(handle):
        found[SHAPE_HANDLE] = handle
    offset = _single(query, "offset")
    if offset is not None and _OFFSET.fullmatch(offset):
        found[SHAPE_OFFSET] = offset
    live = _single(query, "live")
    if live is not None:
        found[SHAPE_LIVE] = live != "false"
        if found[SHAPE_LIVE]:
            found[SHAPE_LIVE_SSE] = any(
                (value := _single(query, key)) is not None and value != "false"
                for key in _SSE_PARAMS
            )
    return found


def upstream_attributes(url: URL) -> Attributes:
    """The upstream's address and URL, without the query (it holds the injected secret)."""
    found: Attributes = {URL_FULL: str(url.with_user(None).with_query(None).with_fragment(None))}
    if url.host is not None:
        found[SERVER_ADDRESS] = url.host
    if url.port is not None:
        found[SERVER_PORT] = url.port
    return found


def error_type(error: BaseException) -> str:
    """The exception's fully qualified class name: never its message, which may hold a URL."""
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
