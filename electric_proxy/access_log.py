"""One line per request through aiohttp's access-log hook, with nothing secret in it.

``[server] access_log = "text"`` (the default), ``"json"`` or ``"off"``, in the form of
``[server] log_format``; in code, ``web.run_app(app, access_log_class=AccessLogger)`` (or
:class:`JsonAccessLogger`).

A line holds the client address, method, path, the query reduced to what is safe, status,
bytes sent, duration, request ID, principal ID and the upstream's status. aiohttp's default
format logs the whole request line (``%r``), so every ``where``, ``params[n]`` and any
``secret`` a client sends would end up in the log; here the query keeps only the protocol
parameters that say where a client is in a shape or stream (``offset``, ``handle``, ``live``,
``cursor``, ``table``, ...). Keys that carry filters or credentials are shown with ``***``
for their value (``where=***``) and any other key is left out. No header is logged: not
``Authorization``, ``Cookie``, ``Referer`` nor ``User-Agent``.

aiohttp calls the logger when a response has been sent; a request whose client left before
its answer (handler cancelled) gets no line, and is counted as ``cancelled`` by the metrics.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .keys import CLIENT_IP, PRINCIPAL, REQUEST_ID, UPSTREAM_STATUS
from .logs import JSON_FIELDS, JSON_MESSAGE, JsonLogFormatter, current_request_id
from .protocol import PASS_THROUGH_PARAMS, SUBSET_PAGING_PARAMS

__all__ = [
    "LOGGER_NAME",
    "AccessLogMode",
    "AccessLogger",
    "JsonAccessLogger",
    "access_log_options",
    "safe_query",
]

LOGGER_NAME = "electric_proxy.access"

AccessLogMode = Literal["text", "json", "off"]

#: Logged with their values: where a client is in a shape or stream, nothing about its data.
SHOWN_QUERY_KEYS = PASS_THROUGH_PARAMS | SUBSET_PAGING_PARAMS | {"table", "replica", "columns"}

#: Logged as ``key=***``: filters, their parameters and credentials.
HIDDEN_QUERY_KEYS = frozenset(
    {
        "where",
        "params",
        "secret",
        "api_secret",
        "source_secret",
        "source_id",
        "subset__where",
        "subset__params",
        "subset__order_by",
        "subset__where_expr",
        "subset__order_by_expr",
    }
)

_UNPRINTABLE = re.compile(r'[^\x21-\x7e]|"')


def _printable(text: str) -> str:
    """Percent-escape spaces, quotes and anything outside printable ASCII (log injection)."""
    return _UNPRINTABLE.sub(lambda m: quote(m.group(), safe=""), text)


def safe_query(items: Any) -> str:
    """The loggable form of a query's ``(key, value)`` pairs (see the module docstring)."""
    parts = []
    for key, value in items:
        if key in SHOWN_QUERY_KEYS:
            parts.append(f"{key}={quote(value, safe=',:-_.~')}")
        elif key in HIDDEN_QUERY_KEYS or key.startswith(("params[", "subset__params[")):
            parts.append(f"{quote(key, safe='[]_')}=***")
    return "&".join(parts)


class AccessLogger(AbstractAccessLogger):
    """``client "METHOD path?safe-query" status bytes duration request_id= principal=
    upstream=``, at INFO on the given logger."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def fields(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> dict[str, Any]:
        principal = request.get(PRINCIPAL)
        return {
            "client": request.get(CLIENT_IP) or request.remote or "-",
            "method": request.method,
            "path": _printable(request.raw_path.partition("?")[0]),
            "query": safe_query(request.query.items()),
            "status": response.status,
            "bytes": response.body_length,
            "duration_s": round(time, 6),
            "request_id": request.get(REQUEST_ID) or current_request_id(),
            "principal": None if principal is None else principal.id,
            "upstream_status": request.get(UPSTREAM_STATUS),
        }

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        try:
            fields = self.fields(request, response, time)
            # The fields again for a JSON formatter (``[server] log_format = "json"``), which
            # makes them the line's own keys beside a short message.
            summary = f"{fields['method']} {fields['path']} {fields['status']}"
            extra = {JSON_FIELDS: fields, JSON_MESSAGE: summary}
            self.logger.info(self.format(fields), extra=extra)
        except Exception:
            self.logger.exception("could not write an access log line")

    def format(self, fields: dict[str, Any]) -> str:
        target = fields["path"] + (f"?{fields['query']}" if fields["query"] else "")
        principal = fields["principal"]
        upstream = fields["upstream_status"]
        return (
            f'{fields["client"]} "{fields["method"]} {target}" {fields["status"]} '
            f"{fields['bytes']} {fields['duration_s']:.3f}s "
            f"request_id={fields['request_id']} "
            f"principal={'-' if principal is None else _printable(principal)} "
            f"upstream={'-' if upstream is None else upstream}"
        )


class JsonAccessLogger(AccessLogger):
    """One JSON object per line, with a UTC ``time``; the same fields as the text form."""

    def format(self, fields: dict[str, Any]) -> str:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        return json.dumps({"time": stamp, **fields}, separators=(",", ":"))


def access_log_options(mode: AccessLogMode) -> dict[str, Any]:
    """The ``web.run_app`` keyword arguments for a ``[server] access_log`` mode.

    JSON lines go to stderr alone (no text prefix), through a handler added to the
    ``electric_proxy.access`` logger unless it already has one; it writes what
    :class:`~electric_proxy.logs.JsonLogFormatter` makes of the record: the request's fields
    with ``time``, ``level``, ``logger`` and a short ``message`` (``GET /v1/shape 200``), the
    same object as every other line of ``[server] log_format = "json"``.
    """
    if mode == "off":
        return {"access_log": None}
    logger = logging.getLogger(LOGGER_NAME)
    if mode == "json" and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLogFormatter())
        logger.addHandler(handler)
        logger.propagate = False
    cls = JsonAccessLogger if mode == "json" else AccessLogger
    return {"access_log_class": cls, "access_log": logger}
