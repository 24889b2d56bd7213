"""electric-proxy: a secure, streaming, pluggable aiohttp proxy in front of ElectricSQL.

The names below are imported when first used, not with the package: ``import
electric_proxy`` and ``electric-proxy --help`` would otherwise load aiohttp, pydantic, pglast
and every step (about a second) before doing anything. Type checkers read the imports under
``TYPE_CHECKING``; at run time :func:`__getattr__` imports a name's module on first access
and keeps the value, so later lookups are plain attribute reads.
"""

import importlib
import typing

from ._version import __version__ as __version__

if typing.TYPE_CHECKING:
    from .access_log import AccessLogger, JsonAccessLogger
    from .audit import Audit, AuditSettings
    from .caching import make_private, merge_vary
    from .chain import (
        Handler,
        Middleware,
        Principal,
        Route,
        Step,
        StepMetric,
        UpstreamRequest,
        client_query,
    )
    from .config import ConfigError, ProxyConfig, StreamsConfig, load_config, parse_config
    from .endpoint import EndpointObserver
    from .errors import (
        BadRequest,
        DuplicateParameter,
        ElectricProxyError,
        Forbidden,
        InvalidBody,
        InvalidFilter,
        MethodNotAllowed,
        NotFound,
        PayloadTooLarge,
        ProxyError,
        Refusal,
        ServiceUnavailable,
        TooManyRequests,
        Unauthorized,
        UnsupportedMediaType,
        UpstreamTimeout,
        UpstreamUnavailable,
    )
    from .explainer import Decision, explain, explain_async
    from .forward import UpstreamResponse, UpstreamSettings
    from .health import Health, HealthSettings
    from .http_server import ProxyRunner, own_application, server_options
    from .keys import (
        CLIENT_IP,
        CREDENTIAL_EXPIRES,
        FORK_SOURCE,
        PRINCIPAL,
        REFUSAL,
        REQUEST_ID,
        ROUTE,
        SAME_FOR_EVERYONE,
        STREAM_PATH,
        UPSTREAM,
        UPSTREAM_STATUS,
    )
    from .logs import RequestIdLogFilter, current_request_id
    from .metrics import METRICS, Metrics, MetricsSettings
    from .protocol import live_kind
    from .registry import ENTRY_POINT_GROUP, available_steps, build_step
    from .revocation import REVOCATIONS, Interrupt, Published, Revocations
    from .shapes import ShapeProxy
    from .steps.auth import Authenticator, bearer_token
    from .steps.bearer import BearerAuth, StaticToken
    from .steps.cache_headers import ResponseHeaders
    from .steps.cors import Cors
    from .steps.credentials import Credentials
    from .steps.gatekeeper import GatekeeperIssuer, GatekeeperVerifier, Grant, ShapeClaim
    from .steps.jwks import JwksCache
    from .steps.jwt import JwtAuth
    from .steps.policy import ShapePolicy, ShapeRule
    from .steps.request_id import RequestId
    from .steps.stream_policy import StreamPolicy, StreamRule
    from .streams import StreamPath, StreamProxy

#: Each public name and the module (relative to this package) that defines it.
_EXPORTS: dict[str, str] = {
    "CLIENT_IP": "keys",
    "CREDENTIAL_EXPIRES": "keys",
    "ENTRY_POINT_GROUP": "registry",
    "FORK_SOURCE": "keys",
    "METRICS": "metrics",
    "PRINCIPAL": "keys",
    "REFUSAL": "keys",
    "REQUEST_ID": "keys",
    "REVOCATIONS": "revocation",
    "ROUTE": "keys",
    "SAME_FOR_EVERYONE": "keys",
    "STREAM_PATH": "keys",
    "UPSTREAM": "keys",
    "UPSTREAM_STATUS": "keys",
    "AccessLogger": "access_log",
    "Audit": "audit",
    "AuditSettings": "audit",
    "Authenticator": "steps.auth",
    "BadRequest": "errors",
    "BearerAuth": "steps.bearer",
    "ConfigError": "config",
    "Cors": "steps.cors",
    "Credentials": "steps.credentials",
    "Decision": "explainer",
    "DuplicateParameter": "errors",
    "ElectricProxyError": "errors",
    "EndpointObserver": "endpoint",
    "Forbidden": "errors",
    "GatekeeperIssuer": "steps.gatekeeper",
    "GatekeeperVerifier": "steps.gatekeeper",
    "Grant": "steps.gatekeeper",
    "Handler": "chain",
    "Health": "health",
    "HealthSettings": "health",
    "Interrupt": "revocation",
    "InvalidBody": "errors",
    "InvalidFilter": "errors",
    "JsonAccessLogger": "access_log",
    "JwksCache": "steps.jwks",
    "JwtAuth": "steps.jwt",
    "MethodNotAllowed": "errors",
    "Metrics": "metrics",
    "MetricsSettings": "metrics",
    "Middleware": "chain",
    "NotFound": "errors",
    "PayloadTooLarge": "errors",
    "Principal": "chain",
    "ProxyConfig": "config",
    "ProxyError": "errors",
    "ProxyRunner": "http_server",
    "Published": "revocation",
    "Refusal": "errors",
    "RequestId": "steps.request_id",
    "RequestIdLogFilter": "logs",
    "ResponseHeaders": "steps.cache_headers",
    "Revocations": "revocation",
    "Route": "chain",
    "ServiceUnavailable": "errors",
    "ShapeClaim": "steps.gatekeeper",
    "ShapePolicy": "steps.policy",
    "ShapeProxy": "shapes",
    "ShapeRule": "steps.policy",
    "StaticToken": "steps.bearer",
    "Step": "chain",
    "StepMetric": "chain",
    "StreamPath": "streams",
    "StreamPolicy": "steps.stream_policy",
    "StreamProxy": "streams",
    "StreamRule": "steps.stream_policy",
    "StreamsConfig": "config",
    "TooManyRequests": "errors",
    "Unauthorized": "errors",
    "UnsupportedMediaType": "errors",
    "UpstreamRequest": "chain",
    "UpstreamResponse": "forward",
    "UpstreamSettings": "forward",
    "UpstreamTimeout": "errors",
    "UpstreamUnavailable": "errors",
    "available_steps": "registry",
    "bearer_token": "steps.auth",
    "build_step": "registry",
    "client_query": "chain",
    "current_request_id": "logs",
    "explain": "explainer",
    "explain_async": "explainer",
    "live_kind": "protocol",
    "load_config": "config",
    "make_private": "caching",
    "merge_vary": "caching",
    "own_application": "http_server",
    "parse_config": "config",
    "server_options": "http_server",
}

__all__ = [
    "CLIENT_IP",
    "CREDENTIAL_EXPIRES",
    "ENTRY_POINT_GROUP",
    "FORK_SOURCE",
    "METRICS",
    "PRINCIPAL",
    "REFUSAL",
    "REQUEST_ID",
    "REVOCATIONS",
    "ROUTE",
    "SAME_FOR_EVERYONE",
    "STREAM_PATH",
    "UPSTREAM",
    "UPSTREAM_STATUS",
    "AccessLogger",
    "Audit",
    "AuditSettings",
    "Authenticator",
    "BadRequest",
    "BearerAuth",
    "ConfigError",
    "Cors",
    "Credentials",
    "Decision",
    "DuplicateParameter",
    "ElectricProxyError",
    "EndpointObserver",
    "Forbidden",
    "GatekeeperIssuer",
    "GatekeeperVerifier",
    "Grant",
    "Handler",
    "Health",
    "HealthSettings",
    "Interrupt",
    "InvalidBody",
    "InvalidFilter",
    "JsonAccessLogger",
    "JwksCache",
    "JwtAuth",
    "MethodNotAllowed",
    "Metrics",
    "MetricsSettings",
    "Middleware",
    "NotFound",
    "PayloadTooLarge",
    "Principal",
    "ProxyConfig",
    "ProxyError",
    "ProxyRunner",
    "Published",
    "Refusal",
    "RequestId",
    "RequestIdLogFilter",
    "ResponseHeaders",
    "Revocations",
    "Route",
    "ServiceUnavailable",
    "ShapeClaim",
    "ShapePolicy",
    "ShapeProxy",
    "ShapeRule",
    "StaticToken",
    "Step",
    "StepMetric",
    "StreamPath",
    "StreamPolicy",
    "StreamProxy",
    "StreamRule",
    "StreamsConfig",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamRequest",
    "UpstreamResponse",
    "UpstreamSettings",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "available_steps",
    "bearer_token",
    "build_step",
    "client_query",
    "current_request_id",
    "explain",
    "explain_async",
    "live_kind",
    "load_config",
    "make_private",
    "merge_vary",
    "own_application",
    "parse_config",
    "server_options",
]


def __getattr__(name: str) -> typing.Any:
    """Import the module of a public name on first use (PEP 562) and keep the value."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
