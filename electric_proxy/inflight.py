"""Requests in flight at one endpoint: the live ones held open, and what the upstream said.

A live request is held for up to 20 s (a long-poll waiting for a change) or 60 s (an SSE
stream). When the app shuts down they are not waited for, because their clients can simply
reconnect to another instance; they are ended at once, in the way each kind of client
already handles:

* a request still **waiting for the upstream's answer** is answered ``503`` with
  ``Retry-After: 0`` and ``{"error": "shutting_down"}``, made inside the chain so CORS and
  the other steps still decorate it. Electric's TS client retries every 5xx with its own
  jittered backoff (``Retry-After`` is only a floor), so thousands of clients come back
  spread over about a second rather than at one instant, and it keeps its offset and
  handle. Electric itself answers live requests with a 503 and ``Retry-After`` while its
  stack is down, so this is an answer the client was built for. A closed connection would
  look like a crash (and a browser logs it as a network error); an invented
  ``up-to-date`` would need headers only Electric can compute (cursor, schema) and would
  be cacheable.
* an **SSE stream** is ended after the last whole upstream chunk, with a proper end of the
  chunked body: exactly what Electric does every 60 s, after which the client reconnects
  from the last offset it saw.

The upstream request of an ended request is cancelled with it (a coalesced one once its
last waiter is gone). Catch-up requests, and live requests whose answer is already being
sent, are left to finish within the server's ``shutdown_timeout``.

The mechanism is the request's own task: draining cancels it, and the hold that registered
the task turns that one cancellation into the answer above (``Task.uncancel``), while a
client that goes away at the same moment still cancels the request as usual.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web

from .chain import Handler
from .errors import ServiceUnavailable
from .forward import UpstreamResponse
from .keys import UPSTREAM
from .protocol import LiveKind, live_kind

__all__ = ["InFlight"]

_EVENT_STREAM = "text/event-stream"


def _request_kind(request: web.Request) -> LiveKind | None:
    built = request[UPSTREAM]
    if "live" not in built.query:  # catch-up requests: one lookup and done
        return None
    return live_kind(built.query, built.headers.get(hdrs.ACCEPT, ""))


def _shutting_down() -> ServiceUnavailable:
    return ServiceUnavailable(
        "the proxy is shutting down; retry the request",
        code="shutting_down",
        headers={hdrs.RETRY_AFTER: "0"},
    )


@dataclass(eq=False, slots=True)
class _Hold:
    task: asyncio.Task[Any]
    kind: LiveKind
    drained: bool = False

    def end(self) -> None:
        if not self.drained:
            self.drained = True
            self.task.cancel()

    def absorbs(self) -> bool:
        """Whether the CancelledError being handled was ours alone (then it is taken back)."""
        return self.drained and self.task.uncancel() == 0


class InFlight:
    """The live requests of one endpoint, counted while held and ended when the app stops.

    ``held`` counts the requests held right now by kind (for the metrics gauge);
    ``drained`` counts those ended by a shutdown.
    """

    def __init__(self) -> None:
        self.held: dict[LiveKind, int] = {"long_poll": 0, "sse": 0}
        self.drained = 0
        self.draining = False
        self._holds: set[_Hold] = set()

    def _enter(self, kind: LiveKind) -> _Hold:
        task = asyncio.current_task()
        assert task is not None, "requests are handled in tasks"
        hold = _Hold(task, kind)
        self._holds.add(hold)
        self.held[kind] += 1
        if self.draining:
            self.drained += 1
            hold.end()  # delivered at the first await: answered like any other held request
        return hold

    def _leave(self, hold: _Hold) -> None:
        self._holds.discard(hold)
        self.held[hold.kind] -= 1

    def around(self, forward: Handler) -> Handler:
        """Wrap the chain's endpoint: hold live requests while they wait for the upstream."""

        async def run(request: web.Request) -> web.StreamResponse:
            kind = _request_kind(request)
            if kind is None:
                response = await forward(request)
            else:
                response = await self._wait(request, forward, kind)
            return response

        return run

    async def _wait(
        self, request: web.Request, forward: Handler, kind: LiveKind
    ) -> web.StreamResponse:
        hold = self._enter(kind)
        try:
            return await forward(request)
        except asyncio.CancelledError:
            if hold.absorbs():
                raise _shutting_down() from None
            raise
        finally:
            self._leave(hold)

    async def send(
        self, request: web.Request, response: web.StreamResponse
    ) -> web.StreamResponse:
        """The chain's answer, sent now and held when it is a live event stream (so that a
        shutdown can end it between chunks); any other answer is left for aiohttp to send."""
        if not (
            response.status == 200
            and isinstance(response, UpstreamResponse)
            and response.content_type == _EVENT_STREAM
            and _request_kind(request) is not None
        ):
            return response
        hold = self._enter("sse")
        try:
            await response.prepare(request)
        except asyncio.CancelledError:
            if not hold.absorbs():
                raise
            if not response.prepared:
                return _shutting_down().to_response()
            await response.write_eof()
        except ConnectionError:
            pass  # the client is gone; aiohttp ends the exchange as it always does
        finally:
            self._leave(hold)
        return response

    async def open(self, app: web.Application) -> None:
        """``on_startup``: accept live requests (again, when an endpoint is reused)."""
        self.draining = False

    async def drain(self, app: web.Application) -> None:
        """``on_shutdown``: end every held request now, and any that starts from now on."""
        self.draining = True
        for hold in list(self._holds):
            if not hold.drained:
                self.drained += 1
                hold.end()
