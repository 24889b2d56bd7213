"""The proxy's HTTP server: what it says, in its log and on the wire, about requests that
never reach a route.

aiohttp answers a request its parser rejects (bare-LF line ends, a control character in a
header, ``Authorization :``, a line over 8,190 bytes) by itself. It logs the parser's
message with a traceback at ERROR on ``aiohttp.server``, sends the same message as a text
400, and that message quotes the raw request: the bearer token, the ``where`` filter. Its
``Server`` header names the Python and aiohttp versions. Two hooks take this over:

* :func:`server_options`: keyword arguments for ``web.run_app``, ``web.AppRunner`` or a
  test server. Its ``logger`` (aiohttp's public ``RequestHandler`` option) writes every
  line of the server as the proxy does: the message, and for an exception its class and
  frames (:func:`~electric_proxy.logs.describe_exception`), never its text. Enough to keep
  secrets out of the logs of any embedding; ``[server] log_format = "json"`` shows the
  message and the exception as fields of their own.
* :class:`ProxyRunner`: an ``AppRunner`` that also answers such requests with the proxy's
  JSON 400 and ``Server: electric-proxy``. aiohttp has no public hook for this answer, so a
  ``RequestHandler`` subclass overrides ``handle_error``; ``serve``, ``demo`` and the test
  fixtures run on it.

:func:`own_application` gives an application the proxy builds the same face for what its
router answers: JSON errors for 404 and 405 and no versions in ``Server``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import BadHttpMethod
from aiohttp.web_protocol import RequestHandler

from .access_log import access_log_options
from .errors import error_for_status, json_errors
from .logs import DESCRIBED_EXCEPTION, JSON_MESSAGE, describe_exception

__all__ = ["ProxyRunner", "own_application", "server_options"]

LOGGER_NAME = "electric_proxy.server"

#: The ``Server`` header of every answer: the product, not the versions an attacker wants.
SERVER_HEADER = "electric-proxy"


def _exception(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple):
        return exc_info[1] if isinstance(exc_info[1], BaseException) else None
    return sys.exc_info()[1] if exc_info else None


class _ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server messages, with exceptions described rather than printed."""

    def log(
        self,
        level: int,
        msg: object,
        *args: object,
        exc_info: Any = None,
        stack_info: bool = False,
        stacklevel: int = 1,
        extra: Mapping[str, object] | None = None,
        **kwargs: Any,
    ) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = str(msg)
        exc = _exception(exc_info)
        if exc is None:
            self.logger.log(level, "%s", text, stacklevel=stacklevel + 1)
            return
        # The text holds the description for any formatter; a JSON one shows them apart.
        extra = {JSON_MESSAGE: text, DESCRIBED_EXCEPTION: exc}
        described = f"{text}\n{describe_exception(exc)}"
        self.logger.log(level, "%s", described, stacklevel=stacklevel + 1, extra=extra)


def server_options() -> dict[str, Any]:
    """Keyword arguments for ``web.run_app`` / ``web.AppRunner`` / ``TestServer``.

    ``web.run_app(app, **server_options())`` keeps request bytes out of aiohttp's server
    log and its access log (the proxy's :class:`~electric_proxy.AccessLogger` instead of
    aiohttp's, which logs the whole request line); :class:`ProxyRunner` applies them and
    also owns the answer to malformed requests.
    """
    return {**access_log_options("text"), "logger": _ServerLog(logging.getLogger(LOGGER_NAME), {})}


async def set_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: replace the versions aiohttp (or Electric) would announce."""
    response.headers[hdrs.SERVER] = SERVER_HEADER


def own_application(app: web.Application) -> None:
    """Errors of every route of ``app`` as JSON, and :data:`SERVER_HEADER` on every answer.

    For applications the proxy builds; an embedder's own app keeps its own behaviour.
    """
    app.middlewares.append(json_errors)
    app.on_response_prepare.append(set_server_header)


class _ProxyRequestHandler(RequestHandler):
    """A connection that answers what the parser (or a crash) stops as the proxy does."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # ``message`` is the parser's text: it quotes the request, so it is never used.
        kind = "-" if exc is None else type(exc).__name__
        if status >= 500:
            self.logger.error("%d answering %s: %s", status, request.remote, kind, exc_info=exc)
        elif self._request_count == 1 and isinstance(exc, BadHttpMethod):
            self.logger.debug("not HTTP from %s: %s", request.remote, kind)
        else:
            self.logger.info("unparsable request from %s: %s (%d)", request.remote, kind, status)
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started; no error answer can follow")
        text = "the request is not valid HTTP/1.1" if status < 500 else "the proxy failed"
        response = error_for_status(status, text).to_response()
        response.headers[hdrs.SERVER] = SERVER_HEADER
        response.force_close()
        return response


class _ProxyServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _ProxyRequestHandler(self, loop=self._loop, **self._kwargs)


class ProxyRunner(web.AppRunner):
    """``web.AppRunner`` with :func:`server_options` and the proxy's answer to bad HTTP.

    Use it like aiohttp's runner: ``runner = ProxyRunner(app); await runner.setup();
    await web.TCPSite(runner, host, port).start()``.
    """

    __slots__ = ()

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, **{**server_options(), **kwargs})

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _ProxyServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **server._kwargs,
        )
