"""The one error hierarchy: one root, and every HTTP error mapped to one status and JSON code.

    ElectricProxyError                  the root: ``except ElectricProxyError`` catches them all
    ├── ProxyError                      500 internal_error (answered to a client, as JSON)
    │   ├── BadRequest                  400 bad_request
    │   │   ├── DuplicateParameter      400 duplicate_parameter
    │   │   ├── InvalidFilter           400 invalid_filter
    │   │   └── InvalidBody             400 invalid_body
    │   ├── Unauthorized                401 invalid_token (code may be refined: expired_token)
    │   ├── Forbidden                   403 forbidden
    │   ├── NotFound                    404 not_found
    │   ├── MethodNotAllowed            405 method_not_allowed
    │   ├── PayloadTooLarge             413 payload_too_large
    │   ├── TooManyRequests             429 rate_limited (with Retry-After)
    │   ├── ServiceUnavailable          503 service_unavailable
    │   ├── UpstreamUnavailable         502 upstream_unavailable
    │   └── UpstreamTimeout             504 upstream_timeout
    ├── RegistryError                   a step cannot be found, loaded or built (registry)
    ├── JsonInputError                  client JSON refused; also a ValueError (json_input)
    ├── JwksError                       a fetched key set is unusable (steps.jwks)
    └── MetricsUnavailable              the ``metrics`` extra is missing; also a RuntimeError

Only ``ProxyError`` and its subclasses reach a client; the others are raised to the code that
builds or configures the proxy (or turned into a ``ProxyError`` by the step that catches
them). Plugins derive their own errors from the root as well.

Steps raise these; the chain turns them into responses *at the step that raised*, so the
steps outside it (CORS, cache headers) still see and adjust the error response. Messages
must be safe for the client: never a secret, a token or the upstream URL.

Each error response carries a :class:`Refusal` under :data:`REFUSAL` (status, code and the
step that raised), which is what metrics count: bounded values, never the message.

:func:`answer_for` answers *any* exception in this shape: aiohttp's own HTTP errors (an
unknown path, a method the router has no route for) become the class of their status, and
anything unexpected is logged (class and traceback, never its message) and becomes a 500
``internal_error``. :func:`json_errors` applies it to a whole application the proxy builds.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from .keys import REFUSAL
from .logs import describe_exception

__all__ = [
    "BadRequest",
    "DuplicateParameter",
    "ElectricProxyError",
    "Forbidden",
    "InvalidBody",
    "InvalidFilter",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "ProxyError",
    "Refusal",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "answer_for",
    "error_for_status",
    "error_response",
    "json_errors",
]

log = logging.getLogger("electric_proxy.errors")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the proxy answered with an error: its status, its code and who raised it.

    ``step`` is the chain step that raised the error, or ``None`` when the endpoint itself
    answered (unknown path, method, upstream failure, shutdown).
    """

    status: int
    code: str
    step: object | None = None


class ElectricProxyError(Exception):
    """The root of every error electric-proxy raises, so a caller can catch them all at once
    (and tell them from a bug elsewhere)."""


class ProxyError(ElectricProxyError):
    """An answer to the client: its ``status``, its JSON ``code``, a safe message."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = code or self.code
        self.details = dict(details or {})
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": self.error_code, "message": self.message, **self.details}

    def to_response(self, step: object | None = None) -> web.Response:
        """The JSON error response; ``step`` is the chain step that raised, if any."""
        return error_response(
            self.status, self.error_code, self.body(), headers=self.headers, step=step
        )


_ERROR_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def error_response(
    status: int,
    code: str,
    body: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    step: object | None = None,
    refusal: bool = True,
) -> web.Response:
    """Every error the proxy answers, its own or an upstream one it replaced, looks like this.

    ``refusal=False`` for an upstream error passed on in the proxy's words: the proxy did not
    refuse it, and metrics count it by the upstream's status instead.
    """
    response = web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers={**_ERROR_HEADERS, **(headers or {})},
    )
    if refusal:
        response[REFUSAL] = Refusal(status, code, step)
    return response


class BadRequest(ProxyError):
    status = 400
    code = "bad_request"


class DuplicateParameter(BadRequest):
    code = "duplicate_parameter"


class InvalidFilter(BadRequest):
    code = "invalid_filter"


class InvalidBody(BadRequest):
    code = "invalid_body"


class Unauthorized(ProxyError):
    """Carries `WWW-Authenticate` so clients know to (re)authenticate rather than give up."""

    status = 401
    code = "invalid_token"

    def __init__(self, message: str, *, code: str | None = None, realm: str = "electric") -> None:
        error_code = code or self.code
        challenge = f'Bearer realm="{realm}", error="{error_code}"'
        super().__init__(message, code=error_code, headers={"WWW-Authenticate": challenge})


class Forbidden(ProxyError):
    status = 403
    code = "forbidden"


class NotFound(ProxyError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ProxyError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(ProxyError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ProxyError):
    status = 415
    code = "unsupported_media_type"


class TooManyRequests(ProxyError):
    """Says when to come back: Electric's client backs off on 429 and honours `Retry-After`."""

    status = 429
    code = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            message,
            code=code,
            details={**(details or {}), "retry_after": seconds},
            headers={"Retry-After": str(seconds)},
        )


class ServiceUnavailable(ProxyError):
    status = 503
    code = "service_unavailable"


class UpstreamUnavailable(ProxyError):
    status = 502
    code = "upstream_unavailable"


class UpstreamTimeout(ProxyError):
    status = 504
    code = "upstream_timeout"


_BY_STATUS: dict[int, type[ProxyError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        PayloadTooLarge,
        ServiceUnavailable,
        UpstreamUnavailable,
        UpstreamTimeout,
    )
}


def error_for_status(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> ProxyError:
    """The error of the hierarchy for an HTTP status someone else chose (aiohttp, mostly).

    A status without a class of its own becomes ``bad_request`` (4xx) or ``internal_error``.
    Of ``headers`` only ``Allow`` and ``Retry-After`` are kept: they tell a client what to do.
    """
    headers = headers or {}
    if status == Unauthorized.status:
        return Unauthorized(message)
    if status == TooManyRequests.status:
        retry = headers.get(hdrs.RETRY_AFTER, "")
        return TooManyRequests(message, retry_after=float(retry) if retry.isdigit() else 1)
    cls = _BY_STATUS.get(status, BadRequest if status < 500 else ProxyError)
    allow = headers.get(hdrs.ALLOW)
    return cls(message, headers={hdrs.ALLOW: allow} if allow is not None else None)


def as_proxy_error(exc: Exception, where: object | None = None) -> ProxyError:
    """``exc`` as the error the client is told about; an unexpected one is logged here.

    ``where`` (a step, or ``None`` for the endpoint) only names the place in the log line.
    """
    if isinstance(exc, ProxyError):
        return exc
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        return error_for_status(exc.status, exc.reason or "error", exc.headers)
    place = "the endpoint"
    if where is not None:
        place = getattr(where, "__qualname__", type(where).__name__)
    log.error("unexpected %s in %s\n%s", type(exc).__name__, place, describe_exception(exc))
    return ProxyError("the proxy failed to handle this request")


def answer_for(exc: Exception, step: object | None = None) -> web.Response:
    """The JSON answer for ``exc``, raised by ``step`` (``None``: outside any step).

    An ``HTTPException`` below 400 (a redirect) is an answer, not an error: it is re-raised.
    """
    if isinstance(exc, web.HTTPException) and exc.status < 400:
        raise exc
    return as_proxy_error(exc, step).to_response(step)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error of the application as the proxy's JSON, router 404s and 405s included."""
    try:
        response: web.StreamResponse = await handler(request)
    except Exception as exc:
        return answer_for(exc)
    return response
