"""Live revocation: end the live requests of users whose permissions changed.

A held long-poll or SSE stream was authorised once, when it arrived; without this it keeps
serving the old shape until it ends by itself (20 s, 60 s), and its client renews it. A
:class:`Revocations` is given the endpoints it covers and ends, on demand, the held requests
an :class:`Interrupt` (a principal id, claim values, a shape name) or a predicate picks::

    revocations = Revocations([shapes])
    revocations.setup(app)
    ...
    await change_permissions("alice")            # your database, your session store
    revocations.interrupt(principal="alice")     # her held requests end now

Each is ended as :class:`~electric_proxy.inflight.InFlight` ends it on shutdown (a retryable ``503``
``{"error": "interrupted"}`` made inside the chain, or an SSE stream's clean end), so the
client re-requests from its offset (after its own backoff, under a second) and the chain
runs again with fresh claims.

Across replicas and ``--workers``, ``redis_url`` makes every ``Revocations`` subscribe to one
Redis pub/sub channel for the app's lifetime: :meth:`Revocations.publish` ends the matching
requests here and tells every other subscriber to do the same. A predicate cannot travel,
so only :class:`Interrupt` criteria are published. :meth:`Revocations.admin_app` is the HTTP
face of ``publish`` (``POST /admin/interrupt``), off unless ``[admin]`` is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .chain import Principal, StepMetric, UpstreamRequest
from .errors import (
    InvalidBody,
    ProxyError,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)
from .http_server import own_application
from .json_input import JsonInputError, load_client_json
from .keys import PRINCIPAL, UPSTREAM
from .steps.jwt import is_loopback

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

    from .endpoint import Endpoint

__all__ = [
    "REVOCATIONS",
    "AdminSettings",
    "Interrupt",
    "Published",
    "RevocationSettings",
    "Revocations",
    "redis_available",
]

log = logging.getLogger("electric_proxy.revocation")

#: A predicate over who is asking and the upstream request built for them.
RequestPredicate = Callable[[Principal | None, UpstreamRequest], bool]
Scalar = str | int | float | bool

DEFAULT_CHANNEL = "electric-proxy:revocations"

#: Seconds between pings on a quiet subscription. A connection the network dropped without
#: closing it looks open forever; one whose ping gets no answer within three intervals is
#: taken for dead and replaced, so a replica never silently stops receiving interrupts.
PING_INTERVAL = 5.0


def redis_available() -> bool:
    """Whether the optional ``redis`` package (the ``revocation`` extra) is installed."""
    try:
        import redis.asyncio  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Which held requests to end: every given criterion must hold (an AND).

    ``principal`` is the id an authenticator gave; ``claim`` maps dotted claim paths
    (``org.id``) to the value they must have; ``shape`` is the shape's name as the client
    asks for it (``table=``) or the table the policy sent upstream.
    """

    principal: str | None = None
    claim: Mapping[str, Scalar] = field(default_factory=dict)
    shape: str | None = None

    def __post_init__(self) -> None:
        if self.principal is None and not self.claim and self.shape is None:
            raise ValueError("an interrupt needs a principal, a claim or a shape")

    def matches(self, request: web.Request) -> bool:
        """Whether a held request is one of these; a claim the principal lacks never matches."""
        principal = request.get(PRINCIPAL)
        if self.principal is not None and (principal is None or principal.id != self.principal):
            return False
        if self.claim:
            if principal is None:
                return False
            for path, value in self.claim.items():
                try:
                    if principal.claim(path) != value:
                        return False
                except KeyError:
                    return False
        if self.shape is not None:
            asked = request.query.get("table")
            sent = request[UPSTREAM].query.get("table")
            if self.shape not in (asked, sent):
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.principal is not None:
            out["principal"] = self.principal
        if self.claim:
            out["claim"] = dict(self.claim)
        if self.shape is not None:
            out["shape"] = self.shape
        return out

    @classmethod
    def from_json(cls, data: Any) -> Interrupt:
        """Read ``{"principal": ..., "claim": {...}, "shape": ...}``; ValueError if malformed."""
        try:
            body = _InterruptBody.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)
            )
            raise ValueError(problems) from None
        return cls(principal=body.principal, claim=body.claim, shape=body.shape)


class _InterruptBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    principal: str | None = Field(None, min_length=1)
    claim: dict[str, Scalar] = Field(default_factory=dict)
    shape: str | None = Field(None, min_length=1)


@dataclass(frozen=True, slots=True)
class Published:
    """What :meth:`Revocations.publish` did: requests ended here, other replicas told
    (``None`` when Redis could not be reached: only this replica's requests were ended)."""

    ended: int
    replicas: int | None


class RevocationSettings(BaseModel):
    """The ``[revocation]`` section: interrupts shared by every replica through Redis."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    redis_url: SecretStr = Field(description="redis://, rediss:// or unix://; use {$env=...}")
    channel: str = Field(DEFAULT_CHANNEL, min_length=1, description="The pub/sub channel")

    @field_validator("redis_url")
    @classmethod
    def _scheme(cls, value: SecretStr) -> SecretStr:
        # Never echo the URL: it may hold a password.
        scheme = value.get_secret_value().partition("://")[0]
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value


class AdminSettings(BaseModel):
    """The ``[admin]`` section: ``POST /admin/interrupt`` on a listener of its own.

    Off unless the section is present. Off loopback it needs ``token``: anyone who can reach
    it can end every user's live requests (a denial of service, never a data leak).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(9465, ge=0, le=65535, description="Worker i listens on port + i")
    token: SecretStr | None = Field(None, description="Bearer token required on every call")

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("the admin token must be at least 16 characters")
        return value

    def model_post_init(self, context: Any, /) -> None:
        if self.token is None and not is_loopback(self.host):
            raise ValueError(f"host {self.host} is not loopback: set `token` as well")


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class Revocations:
    """Ends held live requests of the endpoints it covers; shared across replicas by Redis.

    ``redis_url`` is optional: without it, interrupts reach this process only.
    """

    def __init__(
        self,
        endpoints: Iterable[Endpoint] = (),
        *,
        redis_url: str | None = None,
        channel: str = DEFAULT_CHANNEL,
    ) -> None:
        if redis_url is not None and not redis_available():
            raise ValueError(
                "redis_url needs the redis package: pip install 'electric-proxy[revocation]'"
            )
        self.endpoints: list[Endpoint] = list(endpoints)
        self.redis_url = redis_url
        self.channel = channel
        #: Whether the Redis subscription is confirmed (always False without ``redis_url``).
        self.subscribed = False
        #: Interrupts received from other replicas (each applied here).
        self.received = 0
        self.addresses: list[Any] = []
        self._origin = secrets.token_hex(8)
        self._publisher: Redis | None = None

    def add(self, endpoint: Endpoint) -> None:
        """Cover one more endpoint (one built after this object, or mounted elsewhere)."""
        self.endpoints.append(endpoint)

    def end(self, match: Callable[[web.Request], bool]) -> int:
        """End the held requests ``match`` picks in every covered endpoint; how many."""
        return sum(endpoint.inflight.interrupt(match) for endpoint in self.endpoints)

    def interrupt(
        self,
        *,
        principal: str | None = None,
        claim: Mapping[str, Scalar] | None = None,
        shape: str | None = None,
        where: RequestPredicate | None = None,
    ) -> int:
        """End the held requests matching every given criterion, in this process; how many.

        ``where(principal, upstream_request)`` is any predicate of yours (``principal`` is
        ``None`` on a chain without an authenticator).
        """
        criteria = None
        if principal is not None or claim or shape is not None:
            criteria = Interrupt(principal=principal, claim=dict(claim or {}), shape=shape)
        elif where is None:
            raise ValueError("give a principal, a claim, a shape or a predicate")

        def match(request: web.Request) -> bool:
            if criteria is not None and not criteria.matches(request):
                return False
            return where is None or where(request.get(PRINCIPAL), request[UPSTREAM])

        return self.end(match)

    async def publish(self, interrupt: Interrupt) -> Published:
        """End the matching requests here, then on every replica subscribed to the channel."""
        ended = self.end(interrupt.matches)
        if self._publisher is None:
            return Published(ended, 0)
        from redis.exceptions import RedisError

        payload = json.dumps({"origin": self._origin, **interrupt.to_json()})
        try:
            receivers = int(await self._publisher.publish(self.channel, payload))
        except (RedisError, OSError) as exc:
            log.warning("could not publish an interrupt (%s)", type(exc).__name__)
            return Published(ended, None)
        return Published(ended, max(0, receivers - (1 if self.subscribed else 0)))

    # -- Redis -------------------------------------------------------------------------------

    def setup(self, app: web.Application) -> None:
        """Subscribe for the app's lifetime (when ``redis_url`` is set)."""
        if self.redis_url is not None:
            app.cleanup_ctx.append(self.cleanup_ctx)

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """Connect, subscribe in the background, and close both on shutdown."""
        from redis.asyncio import Redis

        assert self.redis_url is not None
        from redis.exceptions import RedisError

        publisher: Redis = Redis.from_url(self.redis_url, socket_connect_timeout=5)
        self._publisher = publisher
        try:
            await publisher.ping()  # a wrong URL or password shows now, not at a revocation
        except (RedisError, OSError) as exc:
            log.error(
                "revocation: Redis cannot be reached (%s); interrupts reach this process only "
                "until it can",
                type(exc).__name__,
            )
        listener = asyncio.create_task(self._listen())
        try:
            yield
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            self._publisher = None
            self.subscribed = False
            await publisher.aclose()

    async def _listen(self) -> None:
        """Apply every interrupt other replicas publish; reconnect after a Redis failure."""
        from redis.asyncio import Redis
        from redis.exceptions import RedisError

        assert self.redis_url is not None
        while True:
            client: Redis = Redis.from_url(self.redis_url, socket_connect_timeout=5)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                await self._receive(pubsub)
            except (RedisError, OSError) as exc:
                log.warning("revocation subscription lost (%s); reconnecting", type(exc).__name__)
            finally:
                self.subscribed = False
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await client.aclose()
            await asyncio.sleep(1.0)

    async def _receive(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        heard = loop.time()
        while True:
            message = await pubsub.get_message(timeout=PING_INTERVAL)
            if message is None:
                if loop.time() - heard > 3 * PING_INTERVAL:
                    raise ConnectionError("no answer to pings")
                await pubsub.ping()
                continue
            heard = loop.time()
            kind = message.get("type")
            if kind == "subscribe":
                self.subscribed = True
                log.info("revocations subscribed to %s", self.channel)
                continue
            if kind != "message":
                continue
            self._apply(message.get("data"))

    def _apply(self, data: Any) -> None:
        try:
            payload = json.loads(data)
            if not isinstance(payload, dict):
                raise ValueError("not an object")
            if payload.pop("origin", None) == self._origin:
                return
            interrupt = Interrupt.from_json(payload)
        except (ValueError, TypeError):
            log.warning("ignored a malformed message on %s", self.channel)
            return
        self.received += 1
        ended = self.end(interrupt.matches)
        log.info("interrupt from another replica ended %d held requests", ended)

    def metrics(self) -> list[StepMetric]:
        """Whether this process hears the other replicas, for the metrics scrape: a replica
        that stopped hearing them would keep streaming revoked users' rows."""
        if self.redis_url is None:
            return []
        return [
            StepMetric(
                "electric_proxy_revocation_subscribed",
                "gauge",
                "1 while subscribed to the Redis revocation channel, else 0",
                1.0 if self.subscribed else 0.0,
            ),
            StepMetric(
                "electric_proxy_revocation_received",
                "counter",
                "Interrupts received from other replicas through Redis",
                self.received,
            ),
        ]

    # -- the admin endpoint ------------------------------------------------------------------

    def admin_app(self, token: str | None = None) -> web.Application:
        """``POST /admin/interrupt`` with ``{"principal"|"claim"|"shape": ...}``, answering
        ``{"ended": n, "replicas": r}``; with ``token``, only for ``Authorization: Bearer``
        that token."""
        expected = _digest(token) if token is not None else None

        async def interrupt(request: web.Request) -> web.StreamResponse:
            try:
                if expected is not None:
                    given = request.headers.get(hdrs.AUTHORIZATION, "")
                    scheme, _, value = given.partition(" ")
                    if scheme.lower() != "bearer" or not hmac.compare_digest(
                        _digest(value.strip()), expected
                    ):
                        raise Unauthorized("the admin token is missing or wrong")
                if request.content_type != "application/json":
                    # Only a JSON body: a page in a browser on this host may POST a form or
                    # text/plain to loopback without a preflight, never application/json.
                    raise UnsupportedMediaType("the body must be application/json")
                try:
                    data = load_client_json(await request.read(), max_size=1 << 16)
                    what = Interrupt.from_json(data)
                except (JsonInputError, ValueError) as exc:
                    raise InvalidBody(str(exc)) from None
                published = await self.publish(what)
                if published.replicas is None:
                    raise ServiceUnavailable(
                        "ended here, but the other replicas could not be told; retry",
                        code="not_published",
                        details={"ended": published.ended},
                    )
            except ProxyError as exc:
                return exc.to_response()
            return web.json_response(
                {"ended": published.ended, "replicas": published.replicas},
                headers={hdrs.CACHE_CONTROL: "no-store"},
            )

        app = web.Application()
        own_application(app)
        app.router.add_post("/admin/interrupt", interrupt)
        return app

    def admin_listener(
        self, host: str, port: int, token: str | None = None
    ) -> Callable[[web.Application], AsyncIterator[None]]:
        """A cleanup context serving :meth:`admin_app` on ``host:port`` for the app's life."""

        async def serve(app: web.Application) -> AsyncIterator[None]:
            runner = web.AppRunner(self.admin_app(token), access_log=None, handle_signals=False)
            await runner.setup()
            try:
                await web.TCPSite(runner, host, port).start()
                self.addresses = list(runner.addresses)
                log.info(
                    "admin endpoint on http://%s:%s/admin/interrupt", host, self.addresses[0][1]
                )
                yield
            finally:
                await runner.cleanup()

        return serve


#: The app's :class:`Revocations` (set by :func:`~electric_proxy.server.build_app`).
REVOCATIONS = web.AppKey("electric_proxy.revocations", Revocations)
