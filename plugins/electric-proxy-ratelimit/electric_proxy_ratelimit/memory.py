"""Token buckets and live slots in this process's memory: one instance (or one worker).

Memory stays bounded however many distinct callers show up. A bucket that has refilled to
``burst`` is the same as no bucket, so idle buckets are dropped as soon as they are full
again; and at most ``max_keys`` buckets are kept, the least recently used going first when
a flood of new keys arrives. Dropping a bucket that is not full yet hands its owner a fresh
burst, which is why ``max_keys`` should be well above the number of active callers.
Live slots need no eviction: there is at most one per request in flight.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .backend import Backend, GiveBackSlot, Slot

__all__ = ["MemoryBackend"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    full_at: float


class MemoryBackend(Backend):
    """``clock`` is a monotonic clock in seconds; tests pass their own."""

    def __init__(
        self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._live: dict[str, int] = {}

    def __len__(self) -> int:
        """Buckets currently kept."""
        return len(self._buckets)

    def held(self, key: str) -> int:
        """Live slots of ``key`` currently held."""
        return self._live.get(key, 0)

    def take_now(self, key: str, rate: float, burst: int) -> float:
        """:meth:`take` without the coroutine: nothing here waits."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            tokens = float(burst)
        else:
            tokens = min(float(burst), bucket.tokens + max(0.0, now - bucket.stamp) * rate)
        if tokens < 1.0:
            return (1.0 - tokens) / rate
        tokens -= 1.0
        full_at = now + (burst - tokens) / rate
        if bucket is None:
            self._buckets[key] = _Bucket(tokens, now, full_at)
        else:
            bucket.tokens, bucket.stamp, bucket.full_at = tokens, now, full_at
            self._buckets.move_to_end(key)
        self._evict(now)
        return 0.0

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        while len(buckets) > self.max_keys:
            buckets.popitem(last=False)
        # The least recently used buckets are the likeliest to be full again; each one popped
        # here was pushed once, so the sweep costs O(1) per request on average.
        while buckets:
            oldest = next(iter(buckets.values()))
            if oldest.full_at > now:
                break
            buckets.popitem(last=False)

    async def take(self, key: str, rate: float, burst: int) -> float:
        return self.take_now(key, rate, burst)

    async def acquire(self, key: str, limit: int) -> Slot | None:
        held = self._live.get(key, 0)
        if held >= limit:
            return None
        self._live[key] = held + 1
        return GiveBackSlot(functools.partial(self._give_back, key))

    def _give_back(self, key: str) -> None:
        held = self._live.get(key, 0) - 1
        if held > 0:
            self._live[key] = held
        else:
            self._live.pop(key, None)
