"""Rate limits for electric-proxy: a token bucket per caller and route, live requests counted
by concurrency, kept in memory (one instance) or in Redis (replicas sharing one budget).

Config, once this package is installed::

    [[chain]]
    use = "bearer"            # or any authenticator: limits are per principal after it
    ...

    [[chain]]
    use = "rate_limit"
    rate = 10                 # tokens per second
    burst = 50
    max_live = 20             # live long-polls / SSE streams held at once
    backend = "redis"
    redis_url = { "$env" = "RATELIMIT_REDIS_URL" }
"""

from .backend import Backend, BackendUnavailable, Slot, limit_key
from .memory import MemoryBackend
from .redis_backend import RedisBackend
from .step import RateLimit, RouteLimits, route_identity

__all__ = [
    "Backend",
    "BackendUnavailable",
    "MemoryBackend",
    "RateLimit",
    "RedisBackend",
    "RouteLimits",
    "Slot",
    "limit_key",
    "route_identity",
]
