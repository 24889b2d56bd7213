"""Token buckets and live slots in Redis, shared by every replica behind a load balancer.

* A bucket is a hash (``tokens``, ``ms``) updated by one Lua script, so concurrent replicas
  never both spend the last token. Time is Redis's own ``TIME``, not the replicas' clocks,
  which may disagree. The key expires once the bucket would be full again: an idle caller
  costs nothing.
* A principal's live requests are a sorted set: one member per request, scored with the
  time it expires. Adding a member first drops the expired ones, so the slots of a replica
  that crashed (and never released them) age out after ``slot_ttl``. While a request is
  held, its replica renews the score every ``slot_ttl / 3`` seconds, so a long SSE stream
  keeps its slot however short ``slot_ttl`` is.
* Scripts run with EVALSHA (``register_script``) and are loaded again after a Redis restart.

Nothing here logs or raises the URL: failures become :class:`BackendUnavailable` with the
error's type name, because the URL (and so the connection's own messages) may hold a
password.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .backend import Backend, BackendUnavailable, GiveBackSlot, Slot

__all__ = ["RedisBackend"]

log = logging.getLogger("electric_proxy_ratelimit")

T = TypeVar("T")

_NOW_MS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS[1] the bucket; ARGV rate (tokens/s), burst. Returns 0, or the ms until a token.
TAKE_TOKEN = (
    _NOW_MS
    + """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local tokens = tonumber(state[1])
local stamp = tonumber(state[2])
if tokens == nil or stamp == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate / 1000)
end
if tokens < 1 then
  return math.max(1, math.ceil((1 - tokens) * 1000 / rate))
end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens),
           'ms', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return 0
"""
)

# KEYS[1] the live set; ARGV limit, ttl (ms), member. Returns 1 when the slot is held.
ACQUIRE_SLOT = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)

# KEYS[1] the live set; ARGV ttl (ms), members still held here. Only renews existing members:
# one that already expired stays gone rather than coming back over the limit.
RENEW_SLOTS = (
    _NOW_MS
    + """
local expires = string.format('%d', now + tonumber(ARGV[1]))
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', expires, ARGV[i])
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 0
"""
)

_FAILURES = (RedisError, OSError, TimeoutError)


class RedisBackend(Backend):
    """Build with :meth:`from_url` (owns its pool) or around a client you manage.

    ``start()`` begins renewing held slots; ``close()`` waits for pending releases, gives
    back slots still held, and closes the client when this backend opened it.
    """

    def __init__(
        self,
        client: Redis,
        *,
        key_prefix: str = "electric-proxy:ratelimit:",
        slot_ttl: float = 30.0,
        owns_client: bool = False,
    ) -> None:
        if slot_ttl <= 0:
            raise ValueError("slot_ttl must be positive")
        self.client = client
        self.key_prefix = key_prefix
        self.slot_ttl = slot_ttl
        self.background_errors = 0
        self._owns_client = owns_client
        self._ttl_ms = max(1, round(slot_ttl * 1000))
        self._take = client.register_script(TAKE_TOKEN)
        self._acquire = client.register_script(ACQUIRE_SLOT)
        self._renew = client.register_script(RENEW_SLOTS)
        # Members are unique across replicas and restarts: a random replica id and a counter.
        self._replica = secrets.token_hex(8)
        self._serial = itertools.count(1)
        self._held: dict[str, set[str]] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = 0.5,
        max_connections: int = 64,
        key_prefix: str = "electric-proxy:ratelimit:",
        slot_ttl: float = 30.0,
    ) -> RedisBackend:
        """A pooled client for ``url`` (``redis://``, ``rediss://`` or ``unix://``).

        Every wait is bounded by ``timeout`` (connect, each command, a free pooled
        connection) and a failed command is retried once at most, on a fresh connection: a
        request never waits long for a limiter that is down.
        """
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        client = Redis.from_pool(pool)  # closing the client closes the pool
        return cls(client, key_prefix=key_prefix, slot_ttl=slot_ttl, owns_client=True)

    def bucket_key(self, key: str) -> str:
        return f"{self.key_prefix}bucket:{key}"

    def live_key(self, key: str) -> str:
        return f"{self.key_prefix}live:{key}"

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except _FAILURES as exc:
            raise BackendUnavailable(type(exc).__name__) from None

    async def take(self, key: str, rate: float, burst: int) -> float:
        wait_ms: Any = await self._call(
            lambda: self._take(keys=[self.bucket_key(key)], args=[repr(rate), burst])
        )
        return int(wait_ms) / 1000

    async def acquire(self, key: str, limit: int) -> Slot | None:
        member = f"{self._replica}:{next(self._serial)}"
        live_key = self.live_key(key)
        try:
            held: Any = await self._call(
                lambda: self._acquire(keys=[live_key], args=[limit, self._ttl_ms, member])
            )
        except asyncio.CancelledError:
            # The client left while the script ran: the member may be in the set.
            self._remove_later(live_key, member)
            raise
        if int(held) != 1:
            return None
        self._held.setdefault(live_key, set()).add(member)
        return GiveBackSlot(functools.partial(self._give_back, live_key, member))

    def _give_back(self, live_key: str, member: str) -> None:
        members = self._held.get(live_key)
        if members is not None:
            members.discard(member)
            if not members:
                del self._held[live_key]
        self._remove_later(live_key, member)

    def _remove_later(self, live_key: str, member: str) -> None:
        task = asyncio.get_running_loop().create_task(self._remove(live_key, member))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _remove(self, live_key: str, member: str) -> None:
        try:
            await self.client.zrem(live_key, member)
        except _FAILURES as exc:
            # The slot ages out after slot_ttl instead; nothing renews it any more.
            self._background_failed("release", exc)

    def _background_failed(self, what: str, exc: BaseException) -> None:
        self.background_errors += 1
        log.warning("rate limit: could not %s live slots in Redis (%s)", what, type(exc).__name__)

    def start(self) -> None:
        """Renew held slots in the background until :meth:`close`."""
        if self._renewer is None:
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.slot_ttl / 3)
            await self.renew()

    async def renew(self) -> None:
        """Push the expiry of every slot held here ``slot_ttl`` into the future."""
        if not self._held:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for live_key, members in self._held.items():
                    await self._renew(keys=[live_key], args=[self._ttl_ms, *members], client=pipe)
                await pipe.execute()
        except _FAILURES as exc:
            self._background_failed("renew", exc)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        # Requests still running at shutdown (there should be none) give their slots back.
        for live_key, members in list(self._held.items()):
            for member in list(members):
                self._give_back(live_key, member)
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._owns_client:
            await self.client.aclose()
