"""Cache safety: one user's response can never be served to another from a shared cache."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ALICE, BOB, auth, standard_chain
from multidict import CIMultiDict

from electric_proxy import ResponseHeaders, merge_vary
from electric_proxy.testing.pytest_plugin import RunningUpstream


class SharedCache:
    """The storage rules of RFC 9111 that matter here: `private`/`no-store` are not stored,
    and an entry is reused only when every header named in `Vary` matches."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[dict[str, str | None], bytes]] = {}

    async def get(self, client: Any, url: str, headers: dict[str, str]) -> bytes:
        if url in self.entries:
            varied, body = self.entries[url]
            if all(headers.get(name) == value for name, value in varied.items()):
                return body
        resp = await client.get(url, headers=headers)
        body = await resp.read()
        cache_control = resp.headers.get("Cache-Control", "")
        if "public" in cache_control and "private" not in cache_control:
            vary = [v.strip() for v in resp.headers.get("Vary", "").split(",") if v.strip()]
            self.entries[url] = ({name: headers.get(name) for name in vary}, body)
        return body


@pytest.mark.parametrize(
    "step", [ResponseHeaders(), ResponseHeaders(cache="private")], ids=["vary", "private"]
)
async def test_two_users_never_share_a_cache_entry(
    proxy_client: Any, electric_upstream: RunningUpstream, step: ResponseHeaders
) -> None:
    client = await proxy_client([step, *standard_chain(electric_upstream)])
    cache = SharedCache()
    alice = await cache.get(client, "/v1/shape?offset=-1", auth(ALICE))
    bob = await cache.get(client, "/v1/shape?offset=-1", auth(BOB))
    assert b"acme" in alice and b"globex" not in alice
    assert b"globex" in bob and b"acme" not in bob


async def test_without_the_step_a_shared_cache_would_leak(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    """The control: the cache model above is not trivially safe."""
    client = await proxy_client(standard_chain(electric_upstream))
    cache = SharedCache()
    await cache.get(client, "/v1/shape?offset=-1", auth(ALICE))
    bob = await cache.get(client, "/v1/shape?offset=-1", auth(BOB))
    assert b"acme" in bob


async def test_private_mode_rewrites_cache_control(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    client = await proxy_client(
        [
            ResponseHeaders(cache="private", vary=["Authorization", "Cookie"]),
            *standard_chain(electric_upstream),
        ]
    )
    resp = await client.get("/v1/shape?offset=-1", headers=auth(ALICE))
    cache_control = resp.headers["Cache-Control"]
    assert cache_control.startswith("private")
    assert "public" not in cache_control and "s-maxage" not in cache_control
    assert "max-age=604800" in cache_control
    assert resp.headers["Vary"].endswith("Authorization, Cookie")


def test_merge_vary_keeps_what_is_there() -> None:
    headers = CIMultiDict({"Vary": "Accept-Encoding, authorization"})
    merge_vary(headers, "Authorization", "Cookie", "Cookie")
    assert headers["Vary"] == "Accept-Encoding, authorization, Cookie"
    star = CIMultiDict({"Vary": "*"})
    merge_vary(star, "Origin")
    assert star["Vary"] == "*"
