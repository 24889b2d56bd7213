"""Log context: the request ID on every line logged while a request is handled.

The ID lives in a context variable of the connection's task. The proxy's route clears it at
the start of each request (one task serves every request of a keep-alive connection), and
the ``request_id`` step sets it; it stays bound while the body streams, after the chain
has returned.
"""

from __future__ import annotations

import contextvars
import logging
import traceback

__all__ = ["RequestIdLogFilter", "bind_request_id", "current_request_id", "describe_exception"]

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
        kind = type(current)
        if lines:
            lines.append("raised while handling:")
        lines.append(f"{kind.__module__}.{kind.__qualname__} (message withheld)")
        lines += [line.rstrip("\n") for line in traceback.format_tb(current.__traceback__)]
        current = current.__cause__ or current.__context__
    return "\n".join(lines)
