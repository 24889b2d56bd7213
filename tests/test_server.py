"""Assembly: a config becomes one application; the public ``ProxyConfig`` methods delegate."""

from __future__ import annotations

import resource
from typing import Any

import pytest

from electric_proxy import ConfigError, ShapeProxy, StreamProxy, parse_config
from electric_proxy.server import build_app, raise_open_file_limit

BOTH = {
    "server": {"path": "/api/shape"},
    "upstream": {"url": "http://electric:3000"},
    "streams": {"path": "/api/stream", "upstream": {"url": "http://streams:4437/v1/stream"}},
    "metrics": {"listener": False, "main_path": "/metrics"},
}


def routes(app: Any) -> list[str]:
    return sorted(r.canonical for r in app.router.resources())


def test_one_app_holds_every_endpoint_and_the_operations() -> None:
    pytest.importorskip("prometheus_client")
    config = parse_config(BOTH)
    assert routes(build_app(config)) == [
        "/api/shape",
        "/api/stream/{stream_path}",
        "/healthz",
        "/metrics",
        "/readyz",
    ]
    assert routes(config.app()) == routes(build_app(config))


def test_the_config_methods_build_the_configured_endpoints() -> None:
    config = parse_config(BOTH)
    shapes = config.build()
    assert isinstance(shapes, ShapeProxy) and shapes.path == "/api/shape"
    assert str(shapes.forwarder.url) == "http://electric:3000/v1/shape"
    assert config.streams is not None
    streams = config.streams.build("private")
    assert isinstance(streams, StreamProxy) and streams.path == "/api/stream"
    with pytest.raises(ConfigError, match="no shape endpoint"):
        parse_config({"streams": BOTH["streams"]}).build()


def test_the_open_file_limit_is_raised_to_the_hard_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = {resource.RLIMIT_NOFILE: (1024, 524288)}
    monkeypatch.setattr(resource, "getrlimit", limits.__getitem__)
    monkeypatch.setattr(resource, "setrlimit", limits.__setitem__)
    raise_open_file_limit()
    assert limits[resource.RLIMIT_NOFILE] == (524288, 524288)
