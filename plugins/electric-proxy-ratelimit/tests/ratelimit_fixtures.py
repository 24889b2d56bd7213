"""Fixtures of the rate-limit tests: an Electric stand-in that holds long-polls long enough to
count them, a real redis-server, and limiters on either backend.

Test modules import the fixtures they use (``fixture_<name>``, registered as ``<name>``).
This is not a ``conftest.py`` on purpose: the root test suite imports names from its own
``conftest`` module, and a second ``conftest.py`` collected in the same run would take that
module name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from electric_proxy_ratelimit import RateLimit
from ratelimit_support import unique_prefix

from electric_proxy.testing import RedisServer, RunningUpstream, start_electric


@pytest.fixture(name="electric_upstream")
async def fixture_electric_upstream(aiohttp_server: Any) -> RunningUpstream:
    """Overrides electric-proxy's fixture (which ``proxy_client`` uses): live requests are
    held for 10 s, so a test decides when they end (a change, or the client leaving)."""
    return await start_electric(aiohttp_server, long_poll_timeout=10.0, sse_timeout=10.0)


@pytest.fixture(name="redis_server", scope="session")
def fixture_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests keep apart by key prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(name="own_redis_server")
def fixture_own_redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``own_redis_server(password=None)``: a redis-server the test may stop and restart."""
    started: list[RedisServer] = []

    def start(password: str | None = None) -> RedisServer:
        server = RedisServer(tmp_path, password=password).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(name="limiter", params=["memory", "redis"])
def fixture_limiter(request: pytest.FixtureRequest) -> Callable[..., RateLimit]:
    """``limiter(**options)``: a ``RateLimit`` on the backend of this parametrisation, with
    a Redis key prefix of its own (call it twice with one ``key_prefix`` for two replicas)."""
    if request.param == "memory":
        return lambda **options: RateLimit(**options)
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = unique_prefix()

    def make(**options: Any) -> RateLimit:
        return RateLimit(
            **{"backend": "redis", "redis_url": server.url, "key_prefix": prefix, **options}
        )

    return make
