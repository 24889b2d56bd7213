"""Where ``electric-proxy serve`` writes, and in what form: every line of the process.

``[server] log_format = "json"`` is for log pipelines that parse each line: one text line
among JSON ones (an aiohttp warning, asyncio's "Task exception was never retrieved", a
traceback Python prints for an uncaught exception) is a parse error there, or a record cut
into pieces. So :func:`configure_logging` routes all of them through one handler on the
root logger with one formatter: the proxy's loggers (``electric_proxy.*``), aiohttp's,
asyncio's (:func:`log_loop_exception`), ``warnings`` and what would otherwise reach
``sys.excepthook``, ``threading.excepthook`` and ``sys.unraisablehook``. The access log has
a handler of its own (:func:`~electric_proxy.access_log.access_log_options`) with the same
JSON formatter.

Both forms show an exception by its class and frames, never its message (see
:mod:`electric_proxy.logs`). Only ``serve`` calls this: an embedding app keeps its own
logging.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from types import TracebackType
from typing import Any, Literal

from .logs import JsonLogFormatter, RequestIdLogFilter, SafeTextFormatter

__all__ = ["TEXT_FORMAT", "LogFormat", "configure_logging", "log_loop_exception"]

LogFormat = Literal["text", "json"]

#: The text form of a line: the CLI's before the config is read, and ``serve``'s after.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

log = logging.getLogger("electric_proxy")


def configure_logging(log_format: LogFormat) -> None:
    """One stderr handler on the root logger in ``log_format``, and every other way the
    process could write a line turned into a log record. The root's level is kept."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdLogFilter())
    if log_format == "json":
        handler.setFormatter(JsonLogFormatter())
        # A handler that fails prints logging's own traceback as text; drop the line instead.
        logging.raiseExceptions = False
    else:
        handler.setFormatter(SafeTextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    for previous in list(root.handlers):  # the CLI's, made before the config was read
        root.removeHandler(previous)
    root.addHandler(handler)
    logging.captureWarnings(True)
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread
    sys.unraisablehook = _unraisable


def _uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    log.critical("uncaught %s", kind.__name__, exc_info=(kind, exc, tb))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    name = "?" if args.thread is None else args.thread.name
    log.critical(
        "uncaught %s in thread %s",
        args.exc_type.__name__,
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def _unraisable(unraisable: Any) -> None:
    # ``object`` is left out: its repr could be anything, a request among them.
    exc = unraisable.exc_value
    log.error(
        "%s %s",
        unraisable.err_msg or "Exception ignored in",
        type(unraisable.object).__name__,
        exc_info=(type(exc), exc, unraisable.exc_traceback) if exc is not None else None,
    )


def log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: asyncio's message and the exception, on asyncio's
    logger. asyncio's own handler adds the reprs of the task, future or transport involved,
    and a task's repr quotes its exception's message."""
    exc = context.get("exception")
    logging.getLogger("asyncio").error(
        "%s",
        context.get("message") or "unhandled exception in the event loop",
        exc_info=exc if isinstance(exc, BaseException) else None,
    )
