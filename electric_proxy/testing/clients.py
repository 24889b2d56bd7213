"""Proxies in front of the running stand-ins, served as ``electric-proxy serve`` serves them.

Each factory gives a test an aiohttp ``TestClient`` on a :class:`ProxyTestServer`, so a test
sees what the proxy answers and logs, malformed requests included. A chain without a
``Credentials`` step gets one with the stand-in's secret appended (a deployment always has
one, and without it every test would see the upstream's 401); a chain with its own is used
as given, and ``inject_secret=False`` leaves any chain as given.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner

from ..chain import Middleware
from ..config import parse_config
from ..forward import UpstreamSettings
from ..http_server import ProxyRunner
from ..shapes import ShapeProxy
from ..steps.credentials import Credentials
from ..streams import StreamProxy
from .upstreams import RunningStreams, RunningUpstream

if TYPE_CHECKING:
    from pytest_aiohttp import AiohttpClient

__all__ = [
    "ConfigClientFactory",
    "ProxyClientFactory",
    "ProxyTestServer",
    "config_client_factory",
    "proxy_client_factory",
    "stream_client_factory",
    "with_credentials",
]

ProxyClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
ConfigClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


class ProxyTestServer(TestServer):
    """aiohttp's ``TestServer`` on the proxy's runner (:class:`~electric_proxy.ProxyRunner`)."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return ProxyRunner(self.app, **kwargs)


def with_credentials(chain: Sequence[Middleware], **credentials: Any) -> list[Middleware]:
    """``chain`` with ``Credentials(**credentials)`` last, unless it has a Credentials step."""
    steps = list(chain)
    if not any(isinstance(step, Credentials) for step in steps):
        steps.append(Credentials(**credentials))
    return steps


async def _serve(aiohttp_client: AiohttpClient, app: Any) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await aiohttp_client(ProxyTestServer(app))
    return client


def _endpoint_factory(
    aiohttp_client: AiohttpClient,
    endpoint: Callable[..., ShapeProxy | StreamProxy],
    url: str,
    default_path: str,
    credentials: Mapping[str, str],
) -> ProxyClientFactory:
    async def make(
        chain: Sequence[Middleware],
        *,
        path: str = default_path,
        inject_secret: bool = True,
        **settings: Any,
    ) -> TestClient[Any, Any]:
        if inject_secret:
            chain = with_credentials(chain, **credentials)
        proxy = endpoint(upstream=UpstreamSettings(url=url, **settings), chain=chain, path=path)
        return await _serve(aiohttp_client, proxy.app())

    return make


def proxy_client_factory(
    aiohttp_client: AiohttpClient, upstream: RunningUpstream
) -> ProxyClientFactory:
    """``await make(chain, path="/v1/shape", inject_secret=True, **upstream_settings)``."""
    secret = {"secret": upstream.secret}
    return _endpoint_factory(aiohttp_client, ShapeProxy, upstream.url, "/v1/shape", secret)


def stream_client_factory(
    aiohttp_client: AiohttpClient, streams: RunningStreams
) -> ProxyClientFactory:
    """``await make(chain, path="/v1/stream", inject_secret=True, **upstream_settings)``."""
    secret = {"bearer": streams.secret}
    return _endpoint_factory(aiohttp_client, StreamProxy, streams.url, "/v1/stream", secret)


def config_client_factory(
    aiohttp_client: AiohttpClient, upstream: RunningUpstream
) -> ConfigClientFactory:
    """``await make(config, base=Path())``: ``config`` is what ``proxy.toml`` holds, as a
    mapping. Without an upstream ``url`` (and no ``[streams]`` only), the shape endpoint goes to
    the running stand-in, and its chain gets ``credentials`` with the stand-in's secret unless
    it has a ``credentials`` step. The whole app is served: health routes, metrics, streams."""

    async def make(config: Mapping[str, Any], *, base: Path = Path()) -> TestClient[Any, Any]:
        raw = dict(config)
        shapes = "upstream" in raw or "chain" in raw or "streams" not in raw
        if shapes and "url" not in raw.get("upstream", {}):
            raw["upstream"] = {**raw.get("upstream", {}), "url": upstream.url}
            chain = list(raw.get("chain", []))
            if not any(step.get("use") == "credentials" for step in chain):
                chain.append({"use": "credentials", "secret": upstream.secret})
            raw["chain"] = chain
        return await _serve(aiohttp_client, parse_config(raw, base=base).app())

    return make
