"""The examples in examples/ work as shown."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from electric_proxy import load_config
from electric_proxy.testing import RunningUpstream

EXAMPLES = Path(__file__).parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def test_embed_in_aiohttp_app(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    example = load("embed_in_aiohttp_app")
    client = await aiohttp_client(example.make_app(electric_upstream.url, electric_upstream.secret))

    assert await (await client.get("/")).text() == "my app"
    assert (await client.get("/api/shape?offset=-1")).status == 401

    client.session.cookie_jar.update_cookies({"session": "s-alice"})
    resp = await client.get("/api/shape?offset=-1")
    assert resp.status == 200
    rows = [m["value"] for m in await resp.json() if "value" in m]
    assert rows and {r["org_id"] for r in rows} == {"acme"}
    sent = electric_upstream.electric.requests[-1]
    assert "cookie" not in {k.lower() for k in sent.headers}


def test_cloud_streams_config_checks_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALICE_TOKEN", "alice-token-0123456789")
    monkeypatch.setenv("ELECTRIC_STREAMS_SECRET", "streams-secret-value")
    config = load_config(EXAMPLES / "cloud_streams.toml")
    assert config.upstream is None and config.streams is not None
    assert [name for name, _ in config.streams.steps] == [
        "cors",
        "bearer",
        "stream_policy",
        "credentials",
    ]
    assert str(config.streams.build().forwarder.url).endswith("/v1/stream/svc-your-service-id")
