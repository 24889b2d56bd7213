"""electric-proxy: a secure, streaming, pluggable aiohttp proxy in front of ElectricSQL."""

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
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .explain import Decision, explain, explain_async
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

__version__ = "0.1.0"

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
