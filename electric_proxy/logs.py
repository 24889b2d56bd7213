"""What a log line may hold: the request ID while a request is handled, an exception as its
class and frames, and the two forms of a line (text and JSON).

The ID lives in a context variable of the connection's task. The proxy's route clears it at
the start of each request (one task serves every request of a keep-alive connection), and
the ``request_id`` step sets it; it stays bound while the body streams, after the chain
has returned.

An exception's message can quote what caused it (a header value, a token, a body), so both
formatters here show an exception as :func:`describe_exception` does, whoever logged it:
the proxy, aiohttp, asyncio or a plugin.
"""

from __future__ import annotations

import contextvars
import json
import logging
import traceback
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "DESCRIBED_EXCEPTION",
    "JSON_FIELDS",
    "JSON_MESSAGE",
    "JsonLogFormatter",
    "RequestIdLogFilter",
    "SafeTextFormatter",
    "bind_request_id",
    "current_request_id",
    "describe_exception",
]

#: ``extra`` keys a record may carry for :class:`JsonLogFormatter`: fields of its own (a dict
#: merged into the object), the message to show instead of the text one (whose text may
#: already hold the exception's description), and an exception described in the text.
JSON_FIELDS = "json_fields"
JSON_MESSAGE = "json_message"
DESCRIBED_EXCEPTION = "described_exception"

_CORE_KEYS = frozenset({"time", "level", "logger", "message"})

_current: contextvars.ContextVar[str] = contextvars.ContextVar(
    "electric_proxy_request_id", default="-"
)


def bind_request_id(request_id: str) -> None:
    _current.set(request_id)


def current_request_id() -> str:
    """The ID of the request being handled in this task, or ``-``."""
    return _current.get()


class RequestIdLogFilter(logging.Filter):
    """Adds ``record.request_id`` so a format can put ``%(request_id)s`` on every line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        return True


def describe_exception(exc: BaseException) -> str:
    """An exception as a log may show it: class names and code locations, never messages.

    A message can quote what caused it (a header value, a token, a body), so only the
    type and the traceback's frames are kept, for each exception of a chain.
    """
    lines: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if lines:
            lines.append("raised while handling:")
        lines.append(f"{_exception_name(current)} (message withheld)")
        lines += [line.rstrip("\n") for line in traceback.format_tb(current.__traceback__)]
        current = current.__cause__ or current.__context__
    return "\n".join(lines)


def _exception_name(exc: BaseException) -> str:
    kind = type(exc)
    return f"{kind.__module__}.{kind.__qualname__}"


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except (TypeError, ValueError):  # arguments that do not fit the format: keep the line
        return str(record.msg)


class SafeTextFormatter(logging.Formatter):
    """logging's text formatter, with an exception shown by :func:`describe_exception`."""

    def formatException(self, ei: Any) -> str:
        return describe_exception(ei[1]) if isinstance(ei[1], BaseException) else ""

    def format(self, record: logging.LogRecord) -> str:
        cached, record.exc_text = record.exc_text, None  # another handler's text may quote it
        try:
            return super().format(record)
        finally:
            record.exc_text = cached


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC), ``level``, ``logger``, ``message``,
    ``request_id`` when one is bound, the record's :data:`JSON_FIELDS` (those that are not
    ``-``, the text form's "unknown"), and for an exception
    ``exception`` (its class) and ``traceback`` (:func:`describe_exception`).

    Never raises: a line a log pipeline cannot parse is worse than a plain one.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = getattr(record, JSON_MESSAGE, None)
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message if isinstance(message, str) else _message(record),
        }
        request_id = getattr(record, "request_id", None) or current_request_id()
        if request_id != "-":
            entry["request_id"] = request_id
        fields = getattr(record, JSON_FIELDS, None)
        if isinstance(fields, dict):
            entry.update((k, v) for k, v in fields.items() if k not in _CORE_KEYS and v != "-")
        exc = record.exc_info[1] if record.exc_info else getattr(record, DESCRIBED_EXCEPTION, None)
        if isinstance(exc, BaseException):
            entry["exception"] = _exception_name(exc)
            entry["traceback"] = describe_exception(exc)
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, separators=(",", ":"))
