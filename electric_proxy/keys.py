"""Every per-request and per-response key the proxy shares between its parts, in one place.

A step, the endpoint, the access log and metrics read and write request state under these
typed keys (aiohttp's ``RequestKey``/``ResponseKey``): one list to read to know what state a
request carries, and no string keys to mistype. The types they hold live with the code that
makes them; they are named here only for the type checker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from multidict import MultiMapping

if TYPE_CHECKING:
    from .chain import Principal, Route, UpstreamRequest
    from .errors import Refusal
    from .streams import StreamPath

__all__ = [
    "CLIENT_IP",
    "CLIENT_QUERY",
    "CREDENTIAL_EXPIRES",
    "FORK_SOURCE",
    "PRINCIPAL",
    "REFUSAL",
    "REQUEST_ID",
    "ROUTE",
    "SAME_FOR_EVERYONE",
    "STREAM_PATH",
    "UPSTREAM",
    "UPSTREAM_STATUS",
]

#: The ``Principal`` an authenticator identified.
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("electric_proxy.principal")
#: When the authenticator stops accepting the request's credential (Unix time, leeway
#: included): a live request still held then is ended (:class:`~electric_proxy.inflight.InFlight`).
CREDENTIAL_EXPIRES: web.RequestKey[float] = web.RequestKey("electric_proxy.credential_expires")
#: The ``UpstreamRequest`` the endpoint parsed once; steps edit it, the forwarder sends it.
UPSTREAM: web.RequestKey[UpstreamRequest] = web.RequestKey("electric_proxy.upstream")
#: The serving endpoint's ``Route`` (methods, request and exposed headers).
ROUTE: web.RequestKey[Route] = web.RequestKey("electric_proxy.route")
#: The client's query, checked once for repeated keys the proxy reads.
CLIENT_QUERY: web.RequestKey[MultiMapping[str]] = web.RequestKey("electric_proxy.client_query")
#: Set by a policy when the shape served is configured ``public``: the same rows for anyone.
SAME_FOR_EVERYONE: web.RequestKey[bool] = web.RequestKey("electric_proxy.same_for_everyone")
#: A stream's path below the public prefix, as sent and as decided on.
STREAM_PATH: web.RequestKey[StreamPath] = web.RequestKey("electric_proxy.stream_path")
#: The stream a ``PUT`` forks from (``Stream-Forked-From``), parsed once like the path.
FORK_SOURCE: web.RequestKey[StreamPath] = web.RequestKey("electric_proxy.fork_source")
#: The request ID the ``request_id`` step accepted or minted.
REQUEST_ID: web.RequestKey[str] = web.RequestKey("electric_proxy.request_id")
#: The client's address, read through trusted proxies only.
CLIENT_IP: web.RequestKey[str] = web.RequestKey("electric_proxy.client_ip")
#: The status the upstream answered, before any step changed the response (for logs).
UPSTREAM_STATUS: web.RequestKey[int] = web.RequestKey("electric_proxy.upstream_status")
#: On every error response the proxy made: its status, code and the step that raised.
REFUSAL: web.ResponseKey[Refusal] = web.ResponseKey("electric_proxy.refusal")
