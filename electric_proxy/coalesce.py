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

The upstream request runs in its own task: a waiter that leaves does not cancel it for the
others; it is cancelled only when every waiter has left. The body
is kept once, as it streams in, and replayed to each waiter; a failure reaches them all.
Only a flight that has not been answered yet takes new waiters, so nobody receives an
answer that was computed before they asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

from .bodies import complete_body

__all__ = ["Coalescer"]

log = logging.getLogger("electric_proxy.coalesce")

Head = tuple[int, str | None, CIMultiDict[str]]


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

    def fail_head(self, error: BaseException | None) -> None:
        """The head will never come: ``error`` reaches every waiter (``None``: cancelled)."""
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if waiter.done():
                continue
            if error is None:
                waiter.cancel()
            else:
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


@dataclass
class _Flight:
    reply: SharedReply
    #: The request ID of the waiter whose request went upstream, for the joiners' logs.
    leader: str
    task: asyncio.Task[None] | None = None
    waiters: int = 0


Fetch = Callable[[], Awaitable[aiohttp.ClientResponse]]


class Coalescer:
    def __init__(self) -> None:
        self._flights: dict[Hashable, _Flight] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.upstream_requests = 0
        self.joined = 0

    def join(
        self, key: Hashable, fetch: Fetch, request_id: str = "-"
    ) -> tuple[asyncio.Future[Head], SharedReply, Callable[[], None]]:
        """Join the flight for ``key`` (starting it if there is none).

        Returns a future of this waiter's own for the head, the reply, and ``leave``, which
        the caller calls once it is done with the reply, or when awaiting the head fails
        (cancelled: it is the caller's await, so a held long-poll keeps no frame here).
        ``request_id`` names this waiter in the logs: a joiner's line names the request that
        went upstream (its own ID is already on the line, from the log context).
        """
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight(SharedReply(), request_id)
            self._flights[key] = flight
            flight.task = asyncio.create_task(self._fly(key, flight, fetch))
            self._tasks.add(flight.task)
            flight.task.add_done_callback(self._tasks.discard)
            self.upstream_requests += 1
        else:
            self.joined += 1
            log.debug("joined the shared upstream request %s", flight.leader)
        flight.waiters += 1
        left = False

        def leave() -> None:
            nonlocal left
            if left:
                return
            left = True
            flight.waiters -= 1
            # Nobody joins an answered flight, so once the last waiter is gone nobody ever
            # will read the rest: stop asking Electric.
            if flight.waiters == 0 and not flight.reply.complete and flight.task:
                flight.task.cancel()

        return flight.reply.wait_head(), flight.reply, leave

    async def _fly(self, key: Hashable, flight: _Flight, fetch: Fetch) -> None:
        reply = flight.reply
        try:
            upstream = await fetch()
        except asyncio.CancelledError:
            reply.fail_head(None)
            raise
        except BaseException as exc:
            reply.fail_head(exc)
            return
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
        head = (upstream.status, upstream.reason, CIMultiDict(upstream.headers))
        body = complete_body(upstream)
        if body is not None:
            # Answered in full already: waiters wake to a complete reply and send it at once.
            reply.append(body)
            reply.finish()
            upstream.release()
            reply.set_head(head)
            return
        reply.set_head(head)
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
        """Cancel whatever is still in flight (app shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
