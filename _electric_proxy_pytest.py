"""electric-proxy's pytest fixtures, registered through the ``pytest11`` entry point.

pytest imports every installed plugin before it collects anything, in every project of the
environment, and importing ``electric_proxy`` loads pydantic, pglast and joserfc. So this
module lives outside the package (as Hypothesis's ``_hypothesis_pytestplugin`` does) and
holds only the declarations: each fixture imports the kit (``electric_proxy.testing``) in its
body, and a test suite that never asks for one pays nothing.

The async fixtures are pytest-asyncio's, so they run in its strict mode as in auto mode; they
build on pytest-aiohttp's ``aiohttp_server`` / ``aiohttp_client`` (``pip install
'electric-proxy[testing]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

try:
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # without the testing extra: pytest names the missing aiohttp fixtures
    async_fixture = pytest.fixture  # type: ignore[assignment]

if TYPE_CHECKING:
    from electric_proxy.testing import (
        ConfigClientFactory,
        ProxyClientFactory,
        RunningStreams,
        RunningUpstream,
    )

__all__ = [
    "config_client",
    "electric_upstream",
    "proxy_client",
    "stream_client",
    "streams_upstream",
]


@async_fixture
async def electric_upstream(aiohttp_server: Any) -> RunningUpstream:
    """The two-tenant ``todos`` stand-in, demanding its ``secret``; short live holds."""
    from electric_proxy.testing import start_electric

    return await start_electric(aiohttp_server)


@pytest.fixture
def proxy_client(aiohttp_client: Any, electric_upstream: RunningUpstream) -> ProxyClientFactory:
    """``await proxy_client(chain, path=..., inject_secret=True, **upstream_settings)``: a proxy
    in front of ``electric_upstream``, with ``Credentials`` appended unless the chain has one."""
    from electric_proxy.testing import proxy_client_factory

    return proxy_client_factory(aiohttp_client, electric_upstream)


@pytest.fixture
def config_client(aiohttp_client: Any, electric_upstream: RunningUpstream) -> ConfigClientFactory:
    """``await config_client({"chain": [...]})``: the app ``serve`` runs for that config (the
    shape of ``proxy.toml``), its shape upstream ``electric_upstream`` unless it names one."""
    from electric_proxy.testing import config_client_factory

    return config_client_factory(aiohttp_client, electric_upstream)


@async_fixture
async def streams_upstream(aiohttp_server: Any) -> RunningStreams:
    """A Durable Streams stand-in demanding its ``secret`` as a bearer token."""
    from electric_proxy.testing import start_streams

    return await start_streams(aiohttp_server)


@pytest.fixture
def stream_client(aiohttp_client: Any, streams_upstream: RunningStreams) -> ProxyClientFactory:
    """``await stream_client(chain, path="/v1/stream", inject_secret=True, **settings)``: the
    streams route in front of ``streams_upstream``."""
    from electric_proxy.testing import stream_client_factory

    return stream_client_factory(aiohttp_client, streams_upstream)
