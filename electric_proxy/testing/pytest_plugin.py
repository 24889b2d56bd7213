"""pytest fixtures: a running Electric stand-in and a proxy in front of it, on real sockets.

Registered through the ``pytest11`` entry point; they build on pytest-aiohttp's
``aiohttp_server`` / ``aiohttp_client`` (whose servers cancel handlers when a client goes
away, like the proxy's own runner does). The proxy runs on :class:`ProxyTestServer`, so a
test sees what ``electric-proxy serve`` answers and logs, malformed requests included.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner

from ..app import ShapeProxy
from ..chain import Middleware
from ..forward import UpstreamSettings
from ..http_server import ProxyRunner
from . import FakeElectric, two_tenant_upstream

__all__ = ["ProxyClientFactory", "ProxyTestServer", "RunningUpstream"]


class ProxyTestServer(TestServer):
    """aiohttp's ``TestServer`` on the proxy's runner (:class:`~electric_proxy.ProxyRunner`)."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return ProxyRunner(self.app, **kwargs)


UPSTREAM_SECRET = "upstream-secret-9f3c1d7e5b2a"


@dataclass(frozen=True)
class RunningUpstream:
    electric: FakeElectric
    server: TestServer
    secret: str

    @property
    def url(self) -> str:
        return str(self.server.make_url("/v1/shape"))


ProxyClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def electric_upstream(aiohttp_server: Any) -> RunningUpstream:
    """The two-tenant ``todos`` upstream, requiring :data:`UPSTREAM_SECRET`; short holds."""
    electric = two_tenant_upstream(UPSTREAM_SECRET, long_poll_timeout=1.0, sse_timeout=2.0)
    # Electric's own access log is not the proxy's; keeping it out lets tests scan the
    # proxy's logs for secrets.
    server = await aiohttp_server(electric.app(), access_log=None)
    return RunningUpstream(electric=electric, server=server, secret=UPSTREAM_SECRET)


@pytest.fixture
def proxy_client(aiohttp_client: Any, electric_upstream: RunningUpstream) -> ProxyClientFactory:
    """``await proxy_client(chain, path=..., **upstream_settings)``: a proxy on the upstream."""

    async def make(
        chain: Sequence[Middleware], *, path: str = "/v1/shape", **settings: Any
    ) -> TestClient[Any, Any]:
        upstream = UpstreamSettings(url=electric_upstream.url, **settings)
        proxy = ShapeProxy(upstream=upstream, chain=chain, path=path)
        client: TestClient[Any, Any] = await aiohttp_client(ProxyTestServer(proxy.app()))
        return client

    return make
