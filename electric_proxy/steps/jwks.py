"""Signing keys published by an identity provider as a JWK set, fetched and cached.

The cache answers one question per request: which keys may have signed a token with this
``kid`` and ``alg``. It is built so that the identity provider's health and an attacker's
tokens have as little say as possible in the proxy's behaviour:

* Keys are fetched with the proxy's own ``aiohttp`` session (opened and closed with the
  app, through :meth:`JwksCache.open` / :meth:`JwksCache.close`), never with a blocking
  call on the event loop.
* A known ``kid`` is answered from the cache without waiting. Once the keys are older than
  ``refresh_interval`` they are refreshed in the background while the cached ones keep
  serving.
* An unknown ``kid`` (the provider rotated its keys) triggers a refresh. All refreshes are
  single-flight (concurrent requests share one fetch) and rate-limited by
  ``min_refresh_interval``, so a flood of tokens with made-up ``kid`` values costs the
  provider at most one request per interval.
* A failed refresh (unreachable, timeout, bad status, bad document, no usable key) never
  evicts the keys already cached. Only when no key has ever been fetched is the request
  answered 503: the token may be fine, and a 401 would make clients drop it.
* Symmetric (``oct``) keys and keys marked for encryption are ignored: a published key set
  is public, so a secret in it would let anyone sign.

The counters ``fetches``, ``failures`` and ``unavailable`` (tokens that arrived while no key
could be had) are there for tests and metrics; :meth:`JwksCache.load` lets a readiness
check fetch the keys before the first token does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import aiohttp
from joserfc.errors import JoseError
from joserfc.jwk import DictKey, JWKRegistry, Key
from joserfc.jws import JWSRegistry
from yarl import URL

from ..errors import ElectricProxyError, ServiceUnavailable

__all__ = ["MAX_KEYS", "JwksCache", "JwksError", "key_fits", "parse_jwks"]

log = logging.getLogger("electric_proxy.jwks")

#: More keys than any provider publishes; bounds the work one kid-less token can cause.
MAX_KEYS = 32
_USER_AGENT = "electric-proxy"


class JwksError(ElectricProxyError):
    """Why a fetched key set cannot be used; the cache keeps its previous keys."""


def key_fits(key: Key, alg: str) -> bool:
    """Whether ``key`` can verify ``alg`` (type, curve, ``use`` and the key's own ``alg``).

    joserfc's algorithm models make the decision, so an RSA key is never offered to an
    HMAC algorithm (the classic key-confusion attack) nor an Ed25519 key to ES256.
    """
    model = JWSRegistry.algorithms.get(alg)
    if model is None or alg == "none":
        return False
    try:
        model.check_key(key)
    except JoseError:
        return False
    return True


def parse_jwks(raw: bytes) -> list[Key]:
    """The public signing keys of a JWK set document (RFC 7517 §5).

    Entries that cannot be imported are skipped rather than failing the whole set, so one
    key in a new format at the provider does not lock everyone out.
    """
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise JwksError("the key set is not JSON") from exc
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise JwksError("the document has no `keys` list")
    keys: list[Key] = []
    for entry in entries:
        if len(keys) == MAX_KEYS:
            log.warning("the key set has more than %d keys; the rest are ignored", MAX_KEYS)
            break
        if not isinstance(entry, dict) or entry.get("kty") == "oct":
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            keys.append(JWKRegistry.import_key(cast(DictKey, entry)))
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            log.info("skipping a key the proxy cannot import: %s", type(exc).__name__)
    if not keys:
        raise JwksError("the key set holds no usable signing key")
    return keys


def _display_url(url: str) -> str:
    """The URL without query, fragment or credentials, for log lines."""
    parsed = URL(url)
    return str(parsed.with_user(None).with_query(None).with_fragment(None))


class JwksCache:
    """A JWK set at ``url``, cached, refreshed on expiry and on unknown ``kid`` values.

    ``open()`` and ``close()`` bracket the app's lifetime (the JWT step calls them from its
    cleanup context); they nest, so one step may serve several apps.
    """

    def __init__(
        self,
        url: str,
        *,
        refresh_interval: float = 300.0,
        min_refresh_interval: float = 30.0,
        retry_interval: float = 2.0,
        timeout: float = 5.0,
        max_bytes: int = 1 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.refresh_interval = refresh_interval
        self.min_refresh_interval = min_refresh_interval
        self.retry_interval = retry_interval
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._clock = clock
        self._display_url = _display_url(url)

        self.fetches = 0
        self.failures = 0
        self.unavailable = 0

        self._keys: tuple[Key, ...] = ()
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._users = 0

    @property
    def keys(self) -> tuple[Key, ...]:
        """The keys currently trusted (the last successful fetch)."""
        return self._keys

    def stats(self) -> dict[str, Any]:
        """Counters and state, for health endpoints and metrics (no key material)."""
        return {
            "url": self._display_url,
            "keys": len(self._keys),
            "fetches": self.fetches,
            "failures": self.failures,
            "unavailable": self.unavailable,
        }

    async def open(self) -> None:
        self._users += 1
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": _USER_AGENT, "Accept": "application/json"},
                trust_env=False,
            )

    async def close(self) -> None:
        self._users = max(0, self._users - 1)
        if self._users:
            return
        task, self._inflight = self._inflight, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def keys_for(self, kid: str | None, alg: str) -> Sequence[Key]:
        """The cached keys that may have signed a token with this ``kid`` and ``alg``.

        Empty means "no such key" (the caller answers 401); :class:`ServiceUnavailable` means
        no key could ever be fetched, so the token cannot be judged at all.
        """
        found = self._match(kid, alg)
        if found:
            if self._stale():
                self._refresh_soon(min(self.refresh_interval, self.min_refresh_interval))
            return found
        task = self._refresh_soon(self.min_refresh_interval if self._keys else self.retry_interval)
        if task is not None:
            # asyncio.wait, not the task itself: a client going away must not cancel the fetch
            # others wait on, and a fetch cancelled at shutdown is an outage, not our cancel.
            await asyncio.wait([task])
            found = self._match(kid, alg)
        if not self._keys:
            self.unavailable += 1
            retry_after = max(1, math.ceil(self.retry_interval))
            raise ServiceUnavailable(
                "the identity provider's signing keys are unavailable; try again shortly",
                headers={"Retry-After": str(retry_after)},
            )
        return found

    async def load(self) -> bool:
        """Fetch the key set now if none is cached (at most once per ``retry_interval``, or
        joining the fetch in flight), wait for it, and say whether keys are cached."""
        if not self._keys:
            task = self._refresh_soon(self.retry_interval)
            if task is not None:
                await asyncio.wait([task])
        return bool(self._keys)

    def _match(self, kid: str | None, alg: str) -> list[Key]:
        return [k for k in self._keys if (kid is None or k.kid == kid) and key_fits(k, alg)]

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self.refresh_interval

    def _refresh_soon(self, gap: float) -> asyncio.Task[None] | None:
        """The refresh in flight, or a new one if the last began ``gap`` seconds ago or more.

        ``None`` while the rate limit holds. The gap is ``min_refresh_interval`` for an
        unknown ``kid`` (anyone can send one), ``retry_interval`` while nothing is cached,
        and at most ``refresh_interval`` for keys that merely expired.
        """
        if self._inflight is not None:
            return self._inflight
        now = self._clock()
        if self._attempted_at is not None and now - self._attempted_at < gap:
            return None
        self._attempted_at = now
        self.fetches += 1
        self._inflight = asyncio.get_running_loop().create_task(
            self._refresh(), name=f"jwks refresh {self._display_url}"
        )
        return self._inflight

    async def _refresh(self) -> None:
        try:
            keys = await self._fetch()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever went wrong, the keys already cached stay
            self.failures += 1
            kept = f"keeping {len(self._keys)} cached keys" if self._keys else "no key cached"
            log.warning("JWKS fetch from %s failed (%s); %s", self._display_url, _reason(exc), kept)
        else:
            self._keys = tuple(keys)
            self._fetched_at = self._clock()
            log.info("JWKS from %s: %d signing keys", self._display_url, len(keys))
        finally:
            if self._inflight is asyncio.current_task():
                self._inflight = None

    async def _fetch(self) -> list[Key]:
        session = self._session
        if session is None:
            raise JwksError(
                "the key set session is not open: register the step's cleanup_ctx "
                "(ShapeProxy.setup does) or call JwksCache.open()"
            )
        async with session.get(self.url, allow_redirects=False) as response:
            if response.status != 200:
                raise JwksError(f"HTTP status {response.status}")
            size = 0
            chunks: list[bytes] = []
            async for chunk in response.content.iter_any():
                size += len(chunk)
                if size > self.max_bytes:
                    raise JwksError(f"the key set is larger than {self.max_bytes} bytes")
                chunks.append(chunk)
        return parse_jwks(b"".join(chunks))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, JwksError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__
