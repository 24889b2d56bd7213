"""Live-request coalescing: many identical waiting long-polls, one upstream request.

Thousands of clients of one shape sit on the same live request (same handle, offset and
cursor). When their *fully built* upstream requests are identical (URL with shape,
claims-bound params and credentials; every forwarded header that can change the answer),
Electric would give each the same answer, so the proxy asks once and fans the answer out.
That is safe by construction: requests that differ in anything Electric answers on (another
tenant's params, another filter, another secret, another ``Accept-Encoding``) have
different keys and never share. Headers that only label a request (a request ID, trace
context: :data:`~electric_proxy.protocol.ANSWER_NEUTRAL_HEADERS`) are left out of the key,
or a ``request_id`` step would make every request unique; the shared request carries the
first waiter's, and each joiner logs the ID of the request it joined.

The first waiter (the leader) sends the upstream request in its own task, as an uncoalesced
request would: most live requests are distinct (another user, another shape), and a task
per request only in case someone joins would cost every held long-poll a task, its
coroutine and a future. The others wait on a future each. When the leader leaves before
Electric answered (its client went away, it was interrupted), its request is cancelled
with it, and the waiters ask again: one of them leads a new flight. A live request is safe
to repeat, and a leader leaving is rare next to the memory every held request saves.
A follower that leaves changes nothing for the others.

Once answered, the body (usually complete with the head) is kept once and replayed to each
waiter; a body still arriving is read by a task of its own, so no waiter's slow client
paces the others, and it is cancelled when every waiter has left. A failure reaches them
all. Only a flight that has not been answered yet takes new waiters, so nobody receives an
answer that was computed before they asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

from .bodies import complete_body
from .errors import ElectricProxyError

__all__ = ["Coalescer", "LeaderLeft"]

log = logging.getLogger("electric_proxy.coalesce")

Head = tuple[int, str | None, CIMultiDict[str]]


class LeaderLeft(ElectricProxyError):
    """The waiter that sent a flight's upstream request left before the answer: ask again.

    Never reaches a client: the forwarder catches it and joins again."""


class SharedReply:
    """One upstream answer: its head given to each waiter, its body a growing list of chunks.

    Each waiter waits on a future of its own (:meth:`wait_head`), so one that is cancelled
    never cancels the others' and no shield is needed: a held long-poll keeps one plain
    future rather than a shield's outer future and its two callbacks.
    """

    def __init__(self) -> None:
        self._waiting: list[asyncio.Future[Head]] = []
        self.chunks: list[bytes] = []
        self.error: BaseException | None = None
        self.complete = False
        # Made only when a waiter gets ahead of the body: most replies are whole at once.
        self._more: asyncio.Event | None = None

    def wait_head(self) -> asyncio.Future[Head]:
        """A future of this waiter's own for the head (only before it is known)."""
        waiter: asyncio.Future[Head] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        return waiter

    def set_head(self, head: Head) -> None:
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if not waiter.done():
                waiter.set_result(head)

    def fail_head(self, error: BaseException) -> None:
        """The head will never come: ``error`` reaches every waiter."""
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if not waiter.done():
                waiter.set_exception(error)
                waiter.exception()  # retrieved: a waiter gone meanwhile is no lost failure

    def _wake(self) -> None:
        woken, self._more = self._more, None
        if woken is not None:
            woken.set()

    def append(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self.complete = True
        self._wake()

    def body(self) -> bytes:
        return b"".join(self.chunks)

    async def replay(self) -> AsyncIterator[bytes]:
        index = 0
        while True:
            while index < len(self.chunks):
                yield self.chunks[index]
                index += 1
            if self.complete:
                if self.error is not None:
                    raise self.error
                return
            if self._more is None:
                self._more = asyncio.Event()
            await self._more.wait()


@dataclass(eq=False, slots=True)
class Flight:
    """One shared upstream request and the waiters of its answer."""

    reply: SharedReply
    #: The request ID of the waiter whose request went upstream, for the joiners' logs.
    leader: str
    #: Reads a body that did not arrive with the head (none for most answers).
    task: asyncio.Task[None] | None = None
    waiters: int = 0


class Coalescer:
    def __init__(self) -> None:
        self._flights: dict[Hashable, Flight] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.upstream_requests = 0
        self.joined = 0

    def join(self, key: Hashable, request_id: str = "-") -> tuple[Flight, bool]:
        """The flight for ``key`` and whether this waiter leads it (starting it if there is
        none). The leader sends the request and hands the answer to :meth:`landed`, or its
        failure to :meth:`failed`; the others await ``flight.reply.wait_head()``, which
        raises :class:`LeaderLeft` when they should join again. Every waiter calls
        :meth:`leave` once it is done with the reply, or when waiting failed.

        ``request_id`` names the leader in the logs: a joiner's line names the request
        that went upstream (its own ID is already on the line, from the log context).
        """
        flight = self._flights.get(key)
        leading = flight is None
        if flight is None:
            flight = self._flights[key] = Flight(SharedReply(), request_id)
            self.upstream_requests += 1
        else:
            self.joined += 1
            log.debug("joined the shared upstream request %s", flight.leader)
        flight.waiters += 1
        return flight, leading

    def _land(self, key: Hashable, flight: Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def failed(self, key: Hashable, flight: Flight, error: BaseException) -> None:
        """The leader's request failed, or the leader left (``CancelledError``)."""
        self._land(key, flight)
        left = isinstance(error, asyncio.CancelledError)
        flight.reply.fail_head(LeaderLeft() if left else error)

    def landed(self, key: Hashable, flight: Flight, upstream: aiohttp.ClientResponse) -> Head:
        """The leader's answer arrived: its head reaches every waiter."""
        self._land(key, flight)
        reply = flight.reply
        head = (upstream.status, upstream.reason, CIMultiDict(upstream.headers))
        body = complete_body(upstream)
        if body is not None:
            # Answered in full already: waiters wake to a complete reply and send it at once.
            reply.append(body)
            reply.finish()
            upstream.release()
        else:
            flight.task = asyncio.create_task(self._read_body(reply, upstream))
            self._tasks.add(flight.task)
            flight.task.add_done_callback(self._tasks.discard)
        reply.set_head(head)
        return head

    def leave(self, flight: Flight) -> None:
        """One waiter is done with ``flight`` (call once per :meth:`join`)."""
        flight.waiters -= 1
        # Nobody joins an answered flight, so once the last waiter is gone nobody ever
        # will read the rest: stop asking Electric.
        if flight.waiters == 0 and not flight.reply.complete and flight.task:
            flight.task.cancel()

    async def _read_body(self, reply: SharedReply, upstream: aiohttp.ClientResponse) -> None:
        try:
            async for chunk in upstream.content.iter_any():
                reply.append(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            reply.finish(exc)
            upstream.close()
            return
        except asyncio.CancelledError:
            reply.finish(aiohttp.ClientPayloadError("the shared upstream answer was cut"))
            upstream.close()
            raise
        reply.finish()
        upstream.release()

    async def close(self) -> None:
        """Cancel the bodies still being read (app shutdown); the requests waiting for a
        head are the request tasks', ended with them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
