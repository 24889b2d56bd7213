"""What a rate-limit store must do: take a token from a bucket, hold and release a live slot.

Two stores implement it: :class:`~electric_proxy_ratelimit.memory.MemoryBackend` for one
process and :class:`~electric_proxy_ratelimit.redis_backend.RedisBackend` for replicas that
share one budget. The step decides *which* key and *what* limits; a backend only keeps
count, so both backends answer the same questions the same way.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from electric_proxy import ElectricProxyError

__all__ = ["Backend", "BackendUnavailable", "GiveBackSlot", "Slot", "limit_key"]


class BackendUnavailable(ElectricProxyError):
    """The store could not answer. The message is the underlying error's type name only:
    a connection error's text may name the server, and its URL may hold a password."""


class Slot(abc.ABC):
    """One live request's place in its principal's concurrency budget."""

    @abc.abstractmethod
    def release(self) -> None:
        """Give the place back. Synchronous (it runs from a task's done callback) and
        idempotent; a backend that must do I/O schedules it and keeps track of it."""


class GiveBackSlot(Slot):
    """A slot that calls ``give_back`` on the first :meth:`release` and never again, so a
    backend writes only how a place is given back, not the once-only bookkeeping."""

    __slots__ = ("_give_back",)

    def __init__(self, give_back: Callable[[], None]) -> None:
        self._give_back: Callable[[], None] | None = give_back

    def release(self) -> None:
        give_back, self._give_back = self._give_back, None
        if give_back is not None:
            give_back()


class Backend(abc.ABC):
    @abc.abstractmethod
    async def take(self, key: str, rate: float, burst: int) -> float:
        """Take one token from ``key``'s bucket (``burst`` tokens, ``rate`` refilled per
        second; a new bucket starts full). Returns 0.0 when a token was taken, otherwise the
        seconds until one will be there; a refusal takes nothing. Raises
        :class:`BackendUnavailable`."""

    @abc.abstractmethod
    async def acquire(self, key: str, limit: int) -> Slot | None:
        """Hold one of ``limit`` concurrent slots of ``key``, or ``None`` when all are taken.
        Raises :class:`BackendUnavailable`."""

    async def close(self) -> None:  # noqa: B027 (optional: a memory store holds nothing)
        """Release what the backend holds (connections, slots still held at shutdown)."""


def limit_key(route: str, who: str) -> str:
    """The key of one budget: a route and a caller (``user:<id>`` or ``ip:<address>``).

    The route's length goes first, so no route and caller can spell another pair's key.
    """
    return f"{len(route)}:{route}:{who}"
