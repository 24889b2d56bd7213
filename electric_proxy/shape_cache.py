"""A shared cache of Electric's answers, keyed by the fully built upstream request.

Why it exists: the endpoint marks every per-user answer ``Vary: Authorization`` (see
:mod:`electric_proxy.caching`), so a CDN in front keeps one copy per *user*, and every user
of one organisation pays a full trip to Electric for a snapshot that is byte-identical for
all of them. Behind the chain the proxy knows more than a CDN: after authentication and
policy, the upstream request holds everything Electric answers on (the shape, the
claim-bound ``params[n]``, the credentials, ``Accept``/``Accept-Encoding``). Two users whose
built requests are identical get the same bytes from Electric, so they may share them; two
that differ in anything Electric sees (another tenant, another filter, another secret,
gzip against identity) have different keys and never do. The chain still runs for every
request, hit or miss: the cache answers where the forwarder would have called Electric.

It behaves as a shared cache (RFC 9111) towards Electric's ``Cache-Control``:
``s-maxage`` over ``max-age``; ``no-store``, ``private`` and ``no-cache`` answers are not
stored, nor answers without an explicit lifetime, with ``Set-Cookie`` or ``Vary: *``.
Only ``GET`` catch-up answers are considered (never live ones: the coalescer shares those
while they are computed), only ``200`` and a ``409`` that names the new handle, and only
whole bodies within :attr:`ShapeCache.max_entry_bytes`. Entries keep the status, the
end-to-end headers (not the ones that label one request) and the body bytes as they came,
compressed or not; memory is bounded in bytes, least recently used first out, and so is
what bodies being filled hold at once. Identical misses that arrive together wait for the
first one's answer instead of all asking Electric (nginx's ``proxy_cache_lock``).

This module only stores and decides; :mod:`electric_proxy.forward` talks to Electric.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from dataclasses import dataclass

from aiohttp import hdrs
from multidict import MultiMapping

from .protocol import ANSWER_NEUTRAL_HEADERS

__all__ = [
    "DEFAULT_SHAPE_CACHE_BYTES",
    "CachedAnswer",
    "Fill",
    "ShapeCache",
    "etag_matches",
    "shared_lifetime",
]

#: On by default, modest: a few thousand typical snapshots, a few 10 MiB ones.
DEFAULT_SHAPE_CACHE_BYTES = 64 * 1024 * 1024

#: Statuses worth storing: a log chunk, and a 409 that tells where the shape went.
_STORED_STATUSES = frozenset({200, 409})
_NOT_STORED = frozenset({"no-store", "private", "no-cache"})
#: Headers an entry does not keep: recomputed on the way out (length, age) or labels of
#: the request that filled it.
_NOT_KEPT = ANSWER_NEUTRAL_HEADERS | {"content-length", "age", "date"}
#: A rough per-entry cost beyond body, key and headers (objects, dict slot).
_ENTRY_OVERHEAD = 256

Headers = tuple[tuple[str, str], ...]
#: Status, reason and (end-to-end) headers of an upstream answer.
Head = tuple[int, str | None, MultiMapping[str]]


def _directives(headers: MultiMapping[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for value in headers.getall(hdrs.CACHE_CONTROL, ()):
        for part in value.split(","):
            name, _, arg = part.strip().partition("=")
            if name:
                found.setdefault(name.strip().lower(), arg.strip().strip('"'))
    return found


def _seconds(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def shared_lifetime(status: int, headers: MultiMapping[str]) -> float | None:
    """How long a shared cache may serve this answer, or ``None`` when it must not store it."""
    if status not in _STORED_STATUSES or hdrs.SET_COOKIE in headers:
        return None
    if status == 409 and "electric-handle" not in headers:
        return None  # Electric's "start again" without a handle: nothing stable to share
    if any(v.strip() == "*" for value in headers.getall(hdrs.VARY, ()) for v in value.split(",")):
        return None
    directives = _directives(headers)
    if _NOT_STORED.intersection(directives):
        return None
    lifetime = _seconds(directives.get("s-maxage", directives.get("max-age", "")))
    if lifetime is None:
        return None
    age = _seconds(headers.get(hdrs.AGE, "0")) or 0
    return lifetime - age if lifetime > age else None


def etag_matches(if_none_match: Iterable[str], etag: str | None) -> bool:
    """``If-None-Match`` against an entry's ``ETag`` (weak comparison, ``*``, lists)."""
    if etag is None:
        return False
    own = etag.removeprefix("W/").strip('"')
    for value in if_none_match:
        for tag in value.split(","):
            tag = tag.strip()
            if tag == "*" or tag.removeprefix("W/").strip('"') == own:
                return True
    return False


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """One stored answer of Electric: never changed, shared by every response made from it."""

    status: int
    reason: str | None
    headers: Headers
    body: bytes
    etag: str | None
    stored_at: float
    expires_at: float
    size: int


def _key_size(key: Hashable) -> int:
    if isinstance(key, str):
        return len(key)
    if isinstance(key, tuple):
        return sum(_key_size(part) for part in key)
    return 64


class ShapeCache:
    """Electric's answers by built upstream request, bounded in bytes, least recently used out.

    Identical misses that arrive together make one trip to Electric: the first request fills
    the entry (:meth:`fill`), the others wait for it (:meth:`lookup`, at most ``fill_wait``
    seconds, like nginx's ``proxy_cache_lock``) and are then answered from the cache, or go
    to Electric themselves when the answer could not be stored.

    ``clock`` (seconds, monotonic) is injectable so that freshness can be tested without
    waiting. Counters for metrics: ``hits``, ``misses``, ``evictions`` (entries pushed out
    for room) and :attr:`bytes_held`.
    """

    def __init__(
        self,
        max_bytes: int = DEFAULT_SHAPE_CACHE_BYTES,
        *,
        max_entry_bytes: int | None = None,
        fill_wait: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive; pass no cache to turn it off")
        self.max_bytes = max_bytes
        #: Bodies larger than this stream through uncached (default: 1/8 of the cache).
        self.max_entry_bytes = max_entry_bytes if max_entry_bytes is not None else max_bytes // 8
        #: Bytes bodies being filled may hold at once, so concurrent fills stay bounded too.
        self.fill_budget = max(self.max_entry_bytes, max_bytes // 4)
        self.fill_wait = fill_wait
        self._clock = clock
        self._entries: OrderedDict[Hashable, CachedAnswer] = OrderedDict()
        self._fills: dict[Hashable, Fill] = {}
        self.filling_bytes = 0
        self.bytes_held = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def lookup(self, key: Hashable) -> CachedAnswer | None:
        """The fresh entry for ``key`` (a hit), or ``None`` (a miss), waiting first for an
        identical request that is filling it right now."""
        entry = self._fresh(key)
        fill = self._fills.get(key) if entry is None else None
        if fill is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(fill.started + self.fill_wait):
                    await fill.done.wait()
            entry = self._fresh(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def fill(self, key: Hashable) -> Fill | None:
        """Become the request that fills ``key``; ``None`` while another one still does (it
        took longer than ``fill_wait``: this request goes to Electric without storing)."""
        current = self._fills.get(key)
        if current is not None:
            if current.started + self.fill_wait > asyncio.get_running_loop().time():
                return None
            current.end()  # abandoned (its response was never sent): let this one try
        fill = self._fills[key] = Fill(self, key)
        return fill

    def _fresh(self, key: Hashable) -> CachedAnswer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def age(self, entry: CachedAnswer) -> int:
        """Seconds the entry has been held: its ``Age``, so caches after the proxy count
        Electric's lifetime from when Electric answered, not from when they got it."""
        return int(self._clock() - entry.stored_at)

    def put(
        self,
        key: Hashable,
        status: int,
        reason: str | None,
        headers: MultiMapping[str],
        body: bytes,
    ) -> bool:
        """Store an answer if a shared cache may and it fits; whether it was stored."""
        lifetime = shared_lifetime(status, headers)
        if lifetime is None or len(body) > self.max_entry_bytes:
            return False
        kept = tuple((k, v) for k, v in headers.items() if k.lower() not in _NOT_KEPT)
        size = len(body) + _key_size(key) + sum(len(k) + len(v) for k, v in kept) + _ENTRY_OVERHEAD
        if size > self.max_bytes:
            return False
        now = self._clock()
        entry = CachedAnswer(
            status, reason, kept, body, headers.get(hdrs.ETAG), now, now + lifetime, size
        )
        if key in self._entries:
            self._drop(key)
        self._entries[key] = entry
        self.bytes_held += size
        while self.bytes_held > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.evictions += 1
        return True

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key)
        self.bytes_held -= entry.size


class Fill:
    """One request filling one entry: it stores the answer, or gives up, and then wakes the
    identical requests waiting for it. Ending is idempotent."""

    def __init__(self, cache: ShapeCache, key: Hashable) -> None:
        self._cache = cache
        self._key = key
        self.started = asyncio.get_running_loop().time()
        self.done = asyncio.Event()
        self._held = 0

    def end(self) -> None:
        if self.done.is_set():
            return
        self.done.set()
        cache = self._cache
        if cache._fills.get(self._key) is self:
            del cache._fills[self._key]
        cache.filling_bytes -= self._held
        self._held = 0

    def store(self, head: Head, body: bytes) -> None:
        """A body that came whole with its head: store it (if a shared cache may) and end."""
        self._cache.put(self._key, *head, body)
        self.end()

    def stream(self, head: Head, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``chunks`` passed on as they come, stored once they have all come; a body that
        may not be stored, is cut short or outgrows the limits streams through unstored."""
        status, _, headers = head
        length = _seconds(headers.get(hdrs.CONTENT_LENGTH, "0")) or 0
        if shared_lifetime(status, headers) is None or length > self._cache.max_entry_bytes:
            self.end()
            return chunks
        return self._tee(head, chunks)

    async def _tee(self, head: Head, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        cache = self._cache
        kept: list[bytes] | None = []
        try:
            async for chunk in chunks:
                if kept is not None:
                    size = len(chunk)
                    over_entry = self._held + size > cache.max_entry_bytes
                    if over_entry or cache.filling_bytes + size > cache.fill_budget:
                        kept = None  # too much to keep: stream the rest only, wake the others
                        self.end()
                    else:
                        kept.append(chunk)
                        self._held += size
                        cache.filling_bytes += size
                yield chunk
            if kept is not None:
                cache.put(self._key, *head, b"".join(kept))
        finally:
            self.end()
