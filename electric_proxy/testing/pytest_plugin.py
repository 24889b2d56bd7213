"""The fixtures under their former module name, for ``pytest_plugins = [...]`` lists and
installs whose ``pytest11`` entry point still names this module.

The entry point now names the top-level ``_electric_proxy_pytest``, which pytest can load
without importing ``electric_proxy``; importing this module imports the whole package.
"""

from __future__ import annotations

from _electric_proxy_pytest import (
    config_client,
    electric_upstream,
    proxy_client,
    stream_client,
    streams_upstream,
)

from .clients import ProxyClientFactory, ProxyTestServer
from .upstreams import UPSTREAM_SECRET, RunningUpstream

__all__ = [
    "UPSTREAM_SECRET",
    "ProxyClientFactory",
    "ProxyTestServer",
    "RunningUpstream",
    "config_client",
    "electric_upstream",
    "proxy_client",
    "stream_client",
    "streams_upstream",
]
