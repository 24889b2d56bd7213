"""Static bearer tokens (development, tests, service accounts) or the app's own callback.

The callback form lets an app reuse whatever session logic it has (cookies included)::

    async def from_session(request: web.Request) -> Principal | None: ...
    BearerAuth(callback=from_session)
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from functools import cached_property
from typing import Any

from aiohttp import hdrs, web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from ..chain import Principal
from ..errors import Unauthorized
from .auth import Authenticator, bearer_token

__all__ = ["BearerAuth", "StaticToken"]

SessionCallback = Callable[[web.Request], Awaitable[Principal | None]]


class StaticToken(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    token: SecretStr = Field(min_length=16, description="Use {$env=...} or {$file=...}")
    sub: str = Field(min_length=1, description="The principal's id")
    claims: dict[str, Any] = Field(default_factory=dict)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class BearerAuth(Authenticator):
    """Authenticate with a fixed token list, or by calling ``callback(request)``."""

    tokens: tuple[StaticToken, ...] = ()
    callback: SessionCallback | None = Field(default=None, exclude=True)

    # Digests, not tokens, are the lookup keys: a dict probe on a secret key is a timing
    # side channel on the token itself; on its SHA-256 it tells an attacker nothing.
    @model_validator(mode="after")
    def _one_source(self) -> BearerAuth:
        if not self.tokens and self.callback is None:
            raise ValueError("give `tokens` or a `callback`")
        return self

    def model_post_init(self, context: Any, /) -> None:
        if len(self._by_digest) != len(self.tokens):
            raise ValueError("tokens must be distinct")

    @cached_property
    def _by_digest(self) -> Mapping[bytes, Principal]:
        by_digest: dict[bytes, Principal] = {}
        for entry in self.tokens:
            claims = {"sub": entry.sub, **entry.claims}
            by_digest[_digest(entry.token.get_secret_value())] = Principal(entry.sub, claims)
        return by_digest

    def identity_headers(self) -> tuple[str, ...]:
        # A session callback may read cookies as well as the Authorization header.
        if self.callback is not None:
            return (hdrs.AUTHORIZATION, hdrs.COOKIE)
        return (hdrs.AUTHORIZATION,)

    async def authenticate(self, request: web.Request) -> Principal | None:
        if self.callback is not None:
            principal = await self.callback(request)
            if principal is not None or not self.tokens:
                return principal
        token = bearer_token(request)
        if token is None:
            return None
        principal = self._by_digest.get(_digest(token))
        if principal is None:
            raise Unauthorized("the token is not valid")
        return principal
