"""The optional `headers` step: Vary on further headers, or private for one route."""

from __future__ import annotations

from typing import Any

from conftest import standard_chain
from multidict import CIMultiDict

from electric_proxy import ResponseHeaders, merge_vary
from electric_proxy.testing import ALICE, RunningUpstream, auth


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
