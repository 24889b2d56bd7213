"""electric-proxy: a secure, streaming, pluggable aiohttp proxy in front of ElectricSQL."""

from .app import ShapeProxy
from .chain import (
    PRINCIPAL,
    UPSTREAM,
    Handler,
    Middleware,
    Principal,
    Step,
    UpstreamRequest,
    client_query,
)
from .config import ConfigError, ProxyConfig, load_config, parse_config
from .errors import (
    BadRequest,
    DuplicateParameter,
    Forbidden,
    InvalidBody,
    InvalidFilter,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ProxyError,
    ServiceUnavailable,
    Unauthorized,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .forward import UpstreamResponse, UpstreamSettings
from .registry import ENTRY_POINT_GROUP, available_steps, build_step
from .steps.auth import Authenticator, bearer_token
from .steps.bearer import BearerAuth, StaticToken
from .steps.credentials import Credentials
from .steps.policy import ShapePolicy, ShapeRule

__version__ = "0.1.0"

__all__ = [
    "ENTRY_POINT_GROUP",
    "PRINCIPAL",
    "UPSTREAM",
    "Authenticator",
    "BadRequest",
    "BearerAuth",
    "ConfigError",
    "Credentials",
    "DuplicateParameter",
    "Forbidden",
    "Handler",
    "InvalidBody",
    "InvalidFilter",
    "MethodNotAllowed",
    "Middleware",
    "NotFound",
    "PayloadTooLarge",
    "Principal",
    "ProxyConfig",
    "ProxyError",
    "ServiceUnavailable",
    "ShapePolicy",
    "ShapeProxy",
    "ShapeRule",
    "StaticToken",
    "Step",
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
    "load_config",
    "parse_config",
]
