"""Log context: the request ID on every line logged while a request is handled.

The ID lives in a context variable of the connection's task. The proxy's route clears it at
the start of each request (one task serves every request of a keep-alive connection), and
the ``request_id`` step sets it; it stays bound while the body streams, after the chain
has returned.
"""

from __future__ import annotations

import contextvars
import logging

__all__ = ["RequestIdLogFilter", "bind_request_id", "current_request_id"]

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
