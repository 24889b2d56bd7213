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

from ..caching import merge_vary
from ..chain import Route, Step
from ..errors import Forbidden
from ..keys import ROUTE
from ..protocol import ELECTRIC_EXPOSED_HEADERS, FORWARDED_REQUEST_HEADERS, SHAPE_METHODS

__all__ = ["Cors"]

_BASE_ALLOW_HEADERS = (
    "authorization",
    "content-type",
    "if-none-match",
    "traceparent",
    "tracestate",
)
#: Request headers browsers send without asking (CORS-safelisted): not worth listing.
_SAFELISTED = frozenset({"accept", "accept-encoding", "accept-language", "content-language"})
#: For a step used outside an endpoint (a test, a custom route): the shape endpoint's answer.
_SHAPE_ROUTE = Route(SHAPE_METHODS, FORWARDED_REQUEST_HEADERS, ELECTRIC_EXPOSED_HEADERS)


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
    def _per_route(self) -> dict[Route, tuple[dict[str, str], str]]:
        # Filled once per endpoint (a handful), so a request only looks its answer up.
        return {}

    def _answers(self, route: Route) -> tuple[dict[str, str], str]:
        """The preflight headers and the exposed-header list for one endpoint."""
        answers = self._per_route.get(route)
        if answers is None:
            forwarded = sorted(h for h in route.request_headers if h not in _SAFELISTED)
            names = (*_BASE_ALLOW_HEADERS, *forwarded, *(h.lower() for h in self.allow_headers))
            preflight: dict[str, str] = {
                hdrs.ACCESS_CONTROL_ALLOW_METHODS: route.allow,
                hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ", ".join(dict.fromkeys(names)),
                hdrs.ACCESS_CONTROL_MAX_AGE: str(self.max_age),
            }
            expose = ", ".join(dict.fromkeys(route.exposed_headers + self.expose_headers))
            answers = self._per_route[route] = (preflight, expose)
        return answers

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

    async def on_request(self, request: web.Request) -> web.StreamResponse | None:
        if not (
            request.method == hdrs.METH_OPTIONS
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
        ):
            return None
        allowed = self._allowed(request.headers.get(hdrs.ORIGIN))
        if allowed is None:
            raise Forbidden("this origin may not use the proxy", code="cors_origin_not_allowed")
        preflight_headers, _ = self._answers(request.get(ROUTE, _SHAPE_ROUTE))
        preflight = web.Response(status=204)
        self._decorate(preflight, allowed)
        preflight.headers.update(preflight_headers)
        return preflight

    def on_response(self, request: web.Request, response: web.StreamResponse) -> None:
        allowed = self._allowed(request.headers.get(hdrs.ORIGIN))
        self._decorate(response, allowed)
        if allowed is not None:
            _, expose = self._answers(request.get(ROUTE, _SHAPE_ROUTE))
            response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = expose
