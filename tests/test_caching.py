"""Cache safety by construction: the endpoint marks every response, whatever the chain holds."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from conftest import standard_chain
from pydantic import ValidationError

from electric_proxy import (
    Authenticator,
    ConfigError,
    Credentials,
    Principal,
    ShapePolicy,
    ShapeProxy,
    ShapeRule,
    parse_config,
)
from electric_proxy.chain import Handler
from electric_proxy.testing import ALICE, BOB, RunningUpstream, auth


class SharedCache:
    """The storage rules of RFC 9111 that matter here: `private`/`no-store` are not stored,
    and a stored variant is reused only when every header named in its `Vary` matches."""

    def __init__(self) -> None:
        self.entries: dict[str, list[tuple[dict[str, str | None], bytes]]] = {}
        self.hits = 0

    async def get(self, client: Any, url: str, headers: dict[str, str]) -> bytes:
        for varied, body in self.entries.get(url, ()):
            if all(headers.get(name) == value for name, value in varied.items()):
                self.hits += 1
                return body
        resp = await client.get(url, headers=headers)
        body: bytes = await resp.read()
        cache_control = resp.headers.get("Cache-Control", "")
        if "public" in cache_control and "private" not in cache_control:
            vary = [v.strip() for v in resp.headers.get("Vary", "").split(",") if v.strip()]
            if "*" not in vary:
                variant = ({name: headers.get(name) for name in vary}, body)
                self.entries.setdefault(url, []).append(variant)
        return body


async def _two_users(client: Any) -> tuple[bytes, bytes, SharedCache]:
    cache = SharedCache()
    alice = await cache.get(client, "/v1/shape?offset=-1", auth(ALICE))
    bob = await cache.get(client, "/v1/shape?offset=-1", auth(BOB))
    return alice, bob, cache


@pytest.mark.parametrize("cache", ["vary", "private"])
async def test_two_users_never_share_a_cache_entry_without_any_step(
    aiohttp_client: Any, electric_upstream: RunningUpstream, cache: Any
) -> None:
    proxy = ShapeProxy(
        upstream=electric_upstream.url, chain=standard_chain(electric_upstream), cache=cache
    )
    client = await aiohttp_client(proxy.app())
    alice, bob, model = await _two_users(client)
    assert b"acme" in alice and b"globex" not in alice
    assert b"globex" in bob and b"acme" not in bob
    again = await model.get(client, "/v1/shape?offset=-1", auth(ALICE))
    assert again == alice
    # `vary` keeps caching per user (Alice's repeat is a hit); `private` stores nothing.
    assert model.hits == (1 if cache == "vary" else 0)


async def test_the_cache_model_does_see_a_leak(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    """The control: strip what the endpoint adds, outside it, and the model serves Bob
    Alice's rows, so the test above cannot pass for want of a cache that shares."""

    @web.middleware
    async def strip_vary(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        response.headers.popall("Vary", None)
        return response

    app = web.Application(middlewares=[strip_vary])
    ShapeProxy(upstream=electric_upstream.url, chain=standard_chain(electric_upstream)).setup(app)
    _, bob, _ = await _two_users(await aiohttp_client(app))
    assert b"acme" in bob


async def test_errors_and_refusals_vary_too(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    client = await proxy_client(standard_chain(electric_upstream))
    for headers in ({}, auth("not-a-known-token-000000")):
        resp = await client.get("/v1/shape?offset=-1", headers=headers)
        assert resp.status == 401
        assert "Authorization" in resp.headers["Vary"]


class HeaderKeyAuth(Authenticator):
    """A plugin that names the header it tells users apart by."""

    def identity_headers(self) -> tuple[str, ...]:
        return ("X-Api-Key",)

    async def authenticate(self, request: web.Request) -> Principal | None:
        key = request.headers.get("X-Api-Key")
        return None if key is None else Principal(key, {"org_id": key})


class UnnamedAuth(HeaderKeyAuth):
    """The same plugin, written without saying what it reads."""

    def identity_headers(self) -> None:
        return None


async def test_a_plugin_names_its_header_or_gets_private(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    rest = [
        ShapePolicy(shapes={"todos": {"where": "org_id = :org_id"}}),
        Credentials(secret=electric_upstream.secret),
    ]
    named = await proxy_client([HeaderKeyAuth(), *rest])
    resp = await named.get("/v1/shape?offset=-1", headers={"X-Api-Key": "acme"})
    assert resp.status == 200
    assert resp.headers["Vary"].split(", ")[-1] == "X-Api-Key"
    assert resp.headers["Cache-Control"].startswith("public")

    unnamed = await proxy_client([UnnamedAuth(), *rest])
    resp = await unnamed.get("/v1/shape?offset=-1", headers={"X-Api-Key": "acme"})
    assert resp.status == 200
    assert resp.headers["Cache-Control"].startswith("private")
    assert "s-maxage" not in resp.headers["Cache-Control"]


async def test_a_middleware_that_sets_a_principal_unannounced_gets_private(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    from electric_proxy import PRINCIPAL

    async def sneaky(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[PRINCIPAL] = Principal("alice", {"org_id": "acme"})
        return await handler(request)

    rest = [
        ShapePolicy(shapes={"todos": {"where": "org_id = :org_id"}}),
        Credentials(secret=electric_upstream.secret),
    ]
    client = await proxy_client([sneaky, *rest])
    resp = await client.get("/v1/shape?offset=-1")
    assert resp.status == 200
    assert resp.headers["Cache-Control"].startswith("private")


async def test_a_public_shape_is_left_as_electric_made_it(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    chain = standard_chain(electric_upstream)
    chain[1] = ShapePolicy(shapes={"todos": {"where": "done = false", "public": True}})
    client = await proxy_client(chain)
    resp = await client.get("/v1/shape?offset=-1", headers=auth(ALICE))
    assert resp.status == 200
    assert "Vary" not in resp.headers or "Authorization" not in resp.headers["Vary"]
    assert resp.headers["Cache-Control"].startswith("public")


@pytest.mark.parametrize(
    "rule",
    [
        {"where": "org_id = :org_id", "public": True},
        {"where": "done = false", "require_claims": {"role": "admin"}, "public": True},
    ],
)
def test_public_is_refused_where_the_shape_depends_on_claims(rule: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="same for everyone"):
        ShapeRule(**rule)
    config = {
        "upstream": {"url": "http://127.0.0.1:1/v1/shape"},
        "chain": [{"use": "policy", "shapes": {"todos": rule}}],
    }
    with pytest.raises(ConfigError, match=r"chain\[0\] \(policy\)\.shapes\.todos.*same for"):
        parse_config(config)
