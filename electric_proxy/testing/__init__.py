"""The testing kit: fixtures and helpers for this project's tests and plugin authors'.

With ``electric-proxy[testing]`` installed, pytest registers the fixtures
(``electric_upstream``, ``proxy_client``, ``config_client``, ``streams_upstream``,
``stream_client``) through the ``pytest11`` entry point; this package holds what they run and
the helpers tests share::

    @pytest.mark.asyncio
    async def test_my_step(electric_upstream, proxy_client):
        client = await proxy_client([MyAuth(), ShapePolicy(...)])
        resp = await client.get("/v1/shape", params={"offset": "-1"})

The upstreams themselves are the Electric stand-in, :mod:`electric_proxy.standin`; its names
(``FakeElectric``, ``Column``, ``RecordedRequest``, ``TENANT_ROWS``, ``two_tenant_upstream``)
are re-exported here so that imports from before the split keep working.
"""

from __future__ import annotations

from ..standin import TENANT_ROWS, Column, FakeElectric, RecordedRequest, two_tenant_upstream
from .cli import read_until, run_cli, start_cli
from .clients import (
    ConfigClientFactory,
    ProxyClientFactory,
    ProxyTestServer,
    config_client_factory,
    proxy_client_factory,
    stream_client_factory,
    with_credentials,
)
from .messages import Change, ShapeMessages, live_params, shape_messages
from .polling import eventually
from .prerequisites import unavailable
from .redis_server import RedisServer
from .serving import free_port, serve_app
from .upstreams import (
    STREAMS_SECRET,
    UPSTREAM_SECRET,
    RunningStreams,
    RunningUpstream,
    start_electric,
    start_streams,
)
from .users import ALICE, BOB, auth, two_users

__all__ = [
    "ALICE",
    "BOB",
    "STREAMS_SECRET",
    "TENANT_ROWS",
    "UPSTREAM_SECRET",
    "Change",
    "Column",
    "ConfigClientFactory",
    "FakeElectric",
    "ProxyClientFactory",
    "ProxyTestServer",
    "RecordedRequest",
    "RedisServer",
    "RunningStreams",
    "RunningUpstream",
    "ShapeMessages",
    "auth",
    "config_client_factory",
    "eventually",
    "free_port",
    "live_params",
    "proxy_client_factory",
    "read_until",
    "run_cli",
    "serve_app",
    "shape_messages",
    "start_cli",
    "start_electric",
    "start_streams",
    "stream_client_factory",
    "two_tenant_upstream",
    "two_users",
    "unavailable",
    "with_credentials",
]
