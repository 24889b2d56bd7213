"""The ``rate_limit`` step: a token bucket per caller and route, live requests by concurrency.

Who is counted: the principal an authenticator stored (put this step after it), or, for a
request without one, the client address (``CLIENT_IP`` from the ``request_id`` step, else
the peer address). What is counted: each request takes a token from that caller's bucket
for this route, except a live request (``live`` set to anything but ``false``, the rule
Electric applies), which takes no token but holds one of ``max_live`` slots for as long as
it runs. A long-poll waits up to 20 s and an SSE stream up to 60 s for data: charging them
by rate would punish clients for waiting, while counting them at once bounds what they hold.

"As long as it runs" includes the body. The chain returns an unprepared response whose body
aiohttp streams *after* every step has returned, so the slot cannot be released in a
``finally`` around ``handler(request)``. aiohttp runs each request (handler, then
``prepare`` and ``write_eof``) in a task of its own, and cancels it when the client goes
away; the slot is released when that task is done. (``request.task`` is not that task: it
is the connection's, which lives on across keep-alive requests.)
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from redis.asyncio.connection import parse_url

from electric_proxy import (
    CLIENT_IP,
    PRINCIPAL,
    UPSTREAM,
    Handler,
    ServiceUnavailable,
    Step,
    StepMetric,
    TooManyRequests,
    live_kind,
)

from .backend import Backend, BackendUnavailable, Slot, limit_key
from .memory import MemoryBackend
from .redis_backend import RedisBackend

__all__ = ["RateLimit", "RouteLimits", "route_identity"]

log = logging.getLogger("electric_proxy_ratelimit")

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
_REPORT_EVERY = 10.0


class RouteLimits(BaseModel):
    """Limits for one route; an option left out keeps the step's own value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate: float | None = Field(None, gt=0, description="Tokens added per second")
    burst: int | None = Field(None, ge=1, description="Bucket size")
    max_live: int | None = Field(None, ge=1, description="Live requests held at once")


@dataclass(frozen=True, slots=True)
class _Limits:
    rate: float
    burst: int
    max_live: int


@dataclass(slots=True)
class _Counters:
    limited: int = 0
    live_limited: int = 0
    backend_errors: int = 0
    unreported: int = 0
    reported_at: float = -math.inf


def route_identity(request: web.Request) -> str:
    """The route a request matched, as its path without the dynamic tail:
    ``/v1/shape`` for a shape endpoint, ``/v1/stream`` for every stream under it."""
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else request.path
    return canonical.partition("/{")[0] or "/"


def _is_live(request: web.Request) -> bool:
    built = request[UPSTREAM]
    return live_kind(built.query, built.headers.get(hdrs.ACCEPT, "")) is not None


class RateLimit(Step):
    """Per caller and route: ``burst`` requests at once, ``rate`` per second sustained, and
    ``max_live`` live requests held at once. Over either limit: 429 with ``Retry-After``."""

    # Validation errors must not echo redis_url, which may hold a password.
    model_config = ConfigDict(hide_input_in_errors=True)

    rate: float = Field(10.0, gt=0, description="Tokens added per second: the sustained rate")
    burst: int = Field(50, ge=1, description="Bucket size: requests allowed in a burst")
    max_live: int = Field(20, ge=1, description="Live requests one caller may hold at once")
    live_retry_after: float = Field(
        5.0, gt=0, description="Retry-After (s) when every live slot is taken"
    )
    routes: dict[str, RouteLimits] = Field(
        default_factory=dict, description="Per-route overrides, keyed by route path (/v1/shape)"
    )
    key_prefix: str = Field(
        "electric-proxy:ratelimit:", min_length=1, description="Prefix of every Redis key"
    )
    backend: Literal["memory", "redis"] = Field("memory", description="Where counts are kept")
    redis_url: SecretStr | None = Field(None, description="Use {$env=...} or {$file=...}")
    redis_timeout: float = Field(
        0.5, gt=0, description="Seconds for a Redis connect, command or free pooled connection"
    )
    redis_max_connections: int = Field(64, ge=1, description="Redis pool size")
    slot_ttl: float = Field(
        30.0, gt=0, description="Redis: seconds a crashed replica's live slots outlive it"
    )
    max_keys: int = Field(100_000, ge=1, description="Memory: buckets kept at most")
    on_backend_error: Literal["deny", "allow"] = Field(
        "deny", description="When the store cannot answer: 503 (deny) or let requests through"
    )
    backend_retry_after: float = Field(
        5.0, gt=0, description="Retry-After (s) of the 503 when the store cannot answer"
    )

    _default: _Limits = PrivateAttr()
    _routes: dict[str, _Limits] = PrivateAttr()
    _backend_key: web.AppKey[Backend] = PrivateAttr()
    _counters: _Counters = PrivateAttr(default_factory=_Counters)

    @field_validator("routes")
    @classmethod
    def _route_paths(cls, routes: dict[str, RouteLimits]) -> dict[str, RouteLimits]:
        for path in routes:
            if not path.startswith("/") or "{" in path or (path.endswith("/") and path != "/"):
                raise ValueError(f"route {path!r} must be a path like /v1/shape")
        return routes

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        if url is None:
            return url
        # Checked here so a bad URL stops start-up; the messages never quote it.
        try:
            scheme = urlsplit(url.get_secret_value()).scheme
        except ValueError:
            scheme = ""
        if scheme not in _REDIS_SCHEMES:
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        try:
            parse_url(url.get_secret_value())
        except ValueError:
            raise ValueError("not a valid Redis URL (port, database or options)") from None
        return url

    @model_validator(mode="after")
    def _backend_options(self) -> RateLimit:
        if self.backend == "redis" and self.redis_url is None:
            raise ValueError("backend 'redis' needs redis_url")
        if self.backend == "memory" and self.redis_url is not None:
            raise ValueError("redis_url is only used with backend 'redis'")
        return self

    def model_post_init(self, context: Any, /) -> None:
        self._default = _Limits(self.rate, self.burst, self.max_live)
        self._routes = {
            path: _Limits(
                limits.rate or self.rate,
                limits.burst or self.burst,
                limits.max_live or self.max_live,
            )
            for path, limits in self.routes.items()
        }
        self._backend_key = web.AppKey(f"electric_proxy_ratelimit.backend.{id(self):x}")

    # -- counters, for metrics ------------------------------------------------------------

    @property
    def backend_errors(self) -> int:
        """Requests decided by ``on_backend_error`` because the store could not answer."""
        return self._counters.backend_errors

    def stats(self) -> dict[str, int]:
        c = self._counters
        return {
            "limited": c.limited,
            "live_limited": c.live_limited,
            "backend_errors": c.backend_errors,
        }

    def metrics(self) -> Iterator[StepMetric]:
        c = self._counters
        yield StepMetric(
            "electric_proxy_rate_limited",
            "counter",
            "Requests refused with a 429: out of tokens (kind=rate) or of live slots (kind=live)",
            c.limited,
            {"kind": "rate"},
        )
        yield StepMetric(
            "electric_proxy_rate_limited",
            "counter",
            "Requests refused with a 429: out of tokens (kind=rate) or of live slots (kind=live)",
            c.live_limited,
            {"kind": "live"},
        )
        yield StepMetric(
            "electric_proxy_rate_limit_backend_errors",
            "counter",
            "Requests decided by on_backend_error because the store could not answer",
            c.backend_errors,
        )

    # -- lifecycle --------------------------------------------------------------------------

    def open_backend(self) -> Backend:
        """The store the options describe (not yet started)."""
        if self.redis_url is not None:
            return RedisBackend.from_url(
                self.redis_url.get_secret_value(),
                timeout=self.redis_timeout,
                max_connections=self.redis_max_connections,
                key_prefix=self.key_prefix,
                slot_ttl=self.slot_ttl,
            )
        return MemoryBackend(max_keys=self.max_keys)

    def backend_of(self, app: web.Application) -> Backend:
        """The store this step uses in ``app`` (while the app runs)."""
        return app[self._backend_key]

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        if self._backend_key in app:
            # The same step mounted twice on one app: the first mount owns the store.
            yield
            return
        backend = self.open_backend()
        if isinstance(backend, RedisBackend):
            backend.start()
        app[self._backend_key] = backend
        try:
            yield
        finally:
            await backend.close()

    # -- the request path -------------------------------------------------------------------

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == hdrs.METH_OPTIONS:
            return await handler(request)  # a preflight never reaches Electric
        backend = request.config_dict[self._backend_key]
        route = route_identity(request)
        limits = self._routes.get(route, self._default)
        key = limit_key(route, self._caller(request))
        if _is_live(request):
            return await self._hold_live(request, handler, backend, key, limits)
        try:
            wait = await backend.take(key, limits.rate, limits.burst)
        except BackendUnavailable as exc:
            return await self._backend_failed(request, handler, exc)
        if wait > 0:
            self._counters.limited += 1
            raise TooManyRequests(
                "too many requests; retry later", retry_after=wait, details={"limit": "rate"}
            )
        return await handler(request)

    @staticmethod
    def _caller(request: web.Request) -> str:
        principal = request.get(PRINCIPAL)
        if principal is not None:
            return f"user:{principal.id}"
        return f"ip:{request.get(CLIENT_IP) or request.remote or '-'}"

    async def _hold_live(
        self,
        request: web.Request,
        handler: Handler,
        backend: Backend,
        key: str,
        limits: _Limits,
    ) -> web.StreamResponse:
        try:
            slot = await backend.acquire(key, limits.max_live)
        except BackendUnavailable as exc:
            return await self._backend_failed(request, handler, exc)
        if slot is None:
            self._counters.live_limited += 1
            raise TooManyRequests(
                "too many live requests at once; retry later",
                retry_after=self.live_retry_after,
                details={"limit": "live"},
            )
        task = asyncio.current_task()
        if task is None:  # not run by aiohttp's server: release when the handler returns
            try:
                return await handler(request)
            finally:
                slot.release()
        task.add_done_callback(_releaser(slot))
        return await handler(request)

    async def _backend_failed(
        self, request: web.Request, handler: Handler, exc: BackendUnavailable
    ) -> web.StreamResponse:
        counters = self._counters
        counters.backend_errors += 1
        counters.unreported += 1
        now = time.monotonic()
        if now - counters.reported_at >= _REPORT_EVERY:
            action = "denied" if self.on_backend_error == "deny" else "let through"
            log.warning(
                "rate limit store unavailable (%s): %d request(s) %s since the last report",
                exc,
                counters.unreported,
                action,
            )
            counters.unreported, counters.reported_at = 0, now
        if self.on_backend_error == "allow":
            return await handler(request)
        seconds = max(1, math.ceil(self.backend_retry_after))
        raise ServiceUnavailable(
            "rate limiting is unavailable; retry later", headers={"Retry-After": str(seconds)}
        )


def _releaser(slot: Slot) -> Callable[[asyncio.Task[Any]], None]:
    def release(_: asyncio.Task[Any]) -> None:
        slot.release()

    return release
