"""CORS for browsers on other origins: opt-in, explicit origins, credentials done right.

Put it first in the chain, so a preflight is answered before authentication (browsers send
no credentials on a preflight) and every response, errors included, carries the headers a
browser needs to let script read it. The exposed headers are an explicit list: ``*`` is
ignored for requests with credentials, and the Electric client throws an unrecoverable
``MissingHeadersError`` when it cannot read ``electric-offset``/``electric-handle``.
"""

from __future__ import annotations

from functools import cached_property

from aiohttp import hdrs, web
from pydantic import Field, field_validator, model_validator
from yarl import URL

from ..chain import Handler, Step
from ..errors import Forbidden
from ..protocol import ELECTRIC_EXPOSED_HEADERS, SHAPE_METHODS
from .headers import merge_vary

__all__ = ["Cors"]

_BASE_ALLOW_HEADERS = (
    "authorization",
    "content-type",
    "if-none-match",
    "traceparent",
    "tracestate",
)


class Cors(Step):
    """Answer preflights and decorate responses for the configured origins only."""

    allow_origins: tuple[str, ...] = Field(min_length=1, description='e.g. "https://app.example"')
    allow_credentials: bool = Field(False, description="Cookies / Authorization from browsers")
    allow_headers: tuple[str, ...] = Field((), description="Request headers beyond the defaults")
    expose_headers: tuple[str, ...] = Field((), description="Response headers beyond electric-*")
    max_age: int = Field(600, ge=0, description="Seconds a browser may cache a preflight")

    @field_validator("allow_origins")
    @classmethod
    def _exact_origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        for origin in origins:
            if origin == "*":
                continue
            url = URL(origin)
            if url.scheme not in ("http", "https") or not url.host or str(url.origin()) != origin:
                raise ValueError(f"{origin!r} is not an origin like https://app.example[:port]")
        return origins

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> Cors:
        if "*" in self.allow_origins and self.allow_credentials:
            raise ValueError("'*' cannot be combined with allow_credentials: list the origins")
        return self

    @cached_property
    def _any_origin(self) -> bool:
        return "*" in self.allow_origins

    @cached_property
    def _origins(self) -> frozenset[str]:
        return frozenset(o for o in self.allow_origins if o != "*")

    @cached_property
    def _preflight(self) -> dict[str, str]:
        headers = dict.fromkeys(_BASE_ALLOW_HEADERS + tuple(h.lower() for h in self.allow_headers))
        return {
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ", ".join(sorted(SHAPE_METHODS)),
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ", ".join(headers),
            hdrs.ACCESS_CONTROL_MAX_AGE: str(self.max_age),
        }

    @cached_property
    def _expose(self) -> str:
        return ", ".join(dict.fromkeys(ELECTRIC_EXPOSED_HEADERS + self.expose_headers))

    def _allowed(self, origin: str | None) -> str | None:
        """The value for Access-Control-Allow-Origin, or None for a foreign origin."""
        if origin is None:
            return None
        if origin in self._origins:
            return origin
        return "*" if self._any_origin else None

    def _decorate(self, response: web.StreamResponse, allowed: str | None) -> None:
        headers = response.headers
        for name in [k for k in headers if k.lower().startswith("access-control-")]:
            headers.popall(name)
        merge_vary(headers, "Origin")
        if allowed is None:
            return
        headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = allowed
        if self.allow_credentials:
            headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        allowed = self._allowed(origin)
        is_preflight = (
            request.method == hdrs.METH_OPTIONS
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
        )
        if is_preflight:
            if allowed is None:
                raise Forbidden("this origin may not use the proxy", code="cors_origin_not_allowed")
            preflight = web.Response(status=204)
            self._decorate(preflight, allowed)
            preflight.headers.update(self._preflight)
            return preflight
        response = await handler(request)
        self._decorate(response, allowed)
        if allowed is not None:
            response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = self._expose
        return response
