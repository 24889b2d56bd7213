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

The same ending serves two more causes, each with its own error code:

* :meth:`InFlight.interrupt` ends the held requests a predicate picks (``interrupted``):
  live revocation, when a user's permissions change
  (:class:`~electric_proxy.revocation.Revocations`). The client re-requests with the same
  offset and handle, so the chain runs again with fresh claims: a 401 or 403 if access is
  gone, Electric's own 409 must-refetch if the shape the policy builds changed, and the
  same stream otherwise. A 409 made here instead would throw away every client's local
  state even when nothing changed, and would need a new handle only Electric can name.
* a credential's expiry (:data:`~electric_proxy.CREDENTIAL_EXPIRES`, recorded by the
  authenticator) ends the hold at that time (``credential_expired``): the re-request meets
  the authenticator's 401, so an expired token never keeps a stream open.

An interrupt must also reach a request that was already past its authenticator but not yet
held when it was issued: its claims are as old as the held ones'. Each interrupt is kept
for :data:`RECHECK_WINDOW` seconds (at most :data:`RECHECK_LIMIT` of them) under a number
that only grows; a request notes the number when it enters the endpoint
(:meth:`InFlight.arrive`), and when it reaches its hold, the interrupts issued since are
applied to it too. A request that took longer than the window (or than that many
interrupts) to get there is ended anyway, since the interrupts it might have missed are
gone: failing closed costs that one client a retry.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import hdrs, web

from .errors import ServiceUnavailable
from .forward import UpstreamResponse
from .keys import CREDENTIAL_EXPIRES, UPSTREAM
from .protocol import LiveKind, live_kind

__all__ = ["RECHECK_LIMIT", "RECHECK_WINDOW", "EndReason", "InFlight", "RequestMatch"]

#: Seconds an interrupt is remembered for requests still on their way to a hold, far above
#: the time a chain takes (authentication, policy); and at most this many are remembered.
RECHECK_WINDOW = 60.0
RECHECK_LIMIT = 4096

#: The interrupt count a request saw when it entered its endpoint.
_ARRIVED: web.RequestKey[int] = web.RequestKey("electric_proxy.inflight_arrived")

#: Why a held request was ended; each is answered with its own error code.
EndReason = Literal["shutting_down", "interrupted", "credential_expired"]
#: Picks held requests to end (see :meth:`InFlight.interrupt`).
RequestMatch = Callable[[web.Request], bool]

_MESSAGES: dict[EndReason, str] = {
    "shutting_down": "the proxy is shutting down; retry the request",
    "interrupted": "access is being re-checked; retry the request",
    "credential_expired": "the credential expired; retry with a fresh one",
}

_EVENT_STREAM = "text/event-stream"


def _request_kind(request: web.Request) -> LiveKind | None:
    built = request[UPSTREAM]
    if "live" not in built.query:  # catch-up requests: one lookup and done
        return None
    return live_kind(built.query, built.headers.get(hdrs.ACCEPT, ""))


def _ended(reason: EndReason) -> ServiceUnavailable:
    return ServiceUnavailable(_MESSAGES[reason], code=reason, headers={hdrs.RETRY_AFTER: "0"})


@dataclass(eq=False, slots=True)
class Hold:
    """One held request: ended (once) by cancelling its task with a reason to answer."""

    task: asyncio.Task[Any]
    kind: LiveKind
    request: web.Request
    reason: EndReason | None = None
    expiry: asyncio.TimerHandle | None = None

    def end(self, reason: EndReason) -> bool:
        """End the request (once); whether this call did."""
        if self.reason is not None:
            return False
        self.reason = reason
        self.task.cancel()
        return True

    def absorbs(self) -> bool:
        """Whether the CancelledError being handled was ours alone (then it is taken back)."""
        return self.reason is not None and self.task.uncancel() == 0

    def answer(self) -> ServiceUnavailable:
        assert self.reason is not None
        return _ended(self.reason)


class InFlight:
    """The live requests of one endpoint, counted while held and ended when the app stops.

    ``held`` counts the requests held right now by kind (for the metrics gauge);
    ``drained``, ``interrupted`` and ``expired`` count those ended by a shutdown, by
    :meth:`interrupt` and by their credential's expiry. ``clock`` is the wall clock
    (Unix time) a recorded expiry is compared with; tests pass their own.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.held: dict[LiveKind, int] = {"long_poll": 0, "sse": 0}
        self.drained = 0
        self.interrupted = 0
        self.expired = 0
        self.draining = False
        self._holds: set[Hold] = set()
        self._clock = clock
        #: Interrupts issued so far, and the recent ones: (number, loop time, match).
        self._issued = 0
        self._recent: deque[tuple[int, float, RequestMatch]] = deque(maxlen=RECHECK_LIMIT)

    def arrive(self, request: web.Request) -> None:
        """Note that ``request`` entered the endpoint: interrupts issued from now on and
        before its hold also apply to it."""
        request[_ARRIVED] = self._issued

    def _missed(self, request: web.Request) -> bool:
        """Whether an interrupt issued after ``request`` arrived picks it (or may have)."""
        arrived = request.get(_ARRIVED, self._issued)
        if arrived == self._issued:
            return False
        self._forget(time.monotonic())
        if not self._recent or self._recent[0][0] > arrived + 1:
            return True  # some were forgotten while it was on its way
        return any(number > arrived and match(request) for number, _, match in self._recent)

    def _forget(self, now: float) -> None:
        while self._recent and now - self._recent[0][1] > RECHECK_WINDOW:
            self._recent.popleft()

    def _enter(self, request: web.Request, kind: LiveKind) -> Hold:
        task = asyncio.current_task()
        assert task is not None, "requests are handled in tasks"
        hold = Hold(task, kind, request)
        self._holds.add(hold)
        self.held[kind] += 1
        if self.draining:
            self.drained += 1
            hold.end("shutting_down")  # delivered at the first await, like any other ending
            return hold
        if self._missed(request):
            self.interrupted += 1
            hold.end("interrupted")
            return hold
        expires = request.get(CREDENTIAL_EXPIRES)
        if expires is not None:
            delay = max(0.0, expires - self._clock())
            hold.expiry = asyncio.get_running_loop().call_later(delay, self._expire, hold)
        return hold

    def _expire(self, hold: Hold) -> None:
        if hold.end("credential_expired"):
            self.expired += 1

    def _leave(self, hold: Hold) -> None:
        self._holds.discard(hold)
        self.held[hold.kind] -= 1
        if hold.expiry is not None:
            hold.expiry.cancel()

    def hold(self, request: web.Request) -> Hold | None:
        """Hold ``request`` while it waits for the upstream, if it is a live one; give the
        hold back to :meth:`release` once the upstream answered or the wait ended.

        A hold rather than a wrapper coroutine: the caller waits in its own frame, and a
        held request keeps every frame above the upstream call alive.
        """
        kind = _request_kind(request)
        return None if kind is None else self._enter(request, kind)

    def release(self, hold: Hold | None) -> None:
        if hold is not None:
            self._leave(hold)

    async def send(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """The chain's answer, sent now and held when it is a live event stream (so that a
        shutdown can end it between chunks); any other answer is left for aiohttp to send."""
        if not (  # cheapest first: most answers are to catch-up requests
            response.status == 200
            and _request_kind(request) is not None
            and isinstance(response, UpstreamResponse)
            and response.content_type == _EVENT_STREAM
        ):
            return response
        hold = self._enter(request, "sse")
        try:
            await response.prepare(request)
        except asyncio.CancelledError:
            if not hold.absorbs():
                raise
            if not response.prepared:
                return hold.answer().to_response()
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
            if hold.end("shutting_down"):
                self.drained += 1

    def interrupt(self, match: RequestMatch) -> int:
        """End the held requests ``match`` picks, each as a shutdown ends it (a retryable
        ``503`` with ``{"error": "interrupted"}``, or an SSE stream's clean end); how many.

        Requests held at this moment are ended now; those already in the endpoint but not
        yet held are ended when they reach their hold (not counted here).
        """
        now = time.monotonic()
        self._issued += 1
        self._recent.append((self._issued, now, match))
        self._forget(now)
        ended = 0
        for hold in list(self._holds):
            if hold.reason is None and match(hold.request) and hold.end("interrupted"):
                ended += 1
        self.interrupted += ended
        return ended
