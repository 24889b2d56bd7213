"""The whole chain at once: what the Electric client needs survives it, secrets never leak."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from conftest import standard_chain

from electric_proxy import Cors, RequestId, ResponseHeaders
from electric_proxy.testing import ALICE, BOB, RunningUpstream, auth

APP = "https://app.example"


@pytest.fixture
async def client(proxy_client: Any, electric_upstream: RunningUpstream) -> Any:
    chain = [
        Cors(allow_origins=[APP], allow_credentials=True),
        RequestId(),
        ResponseHeaders(vary=["Authorization", "Cookie"]),
        *standard_chain(
            electric_upstream, client_where=True, filter_columns={"title": "text", "done": "bool"}
        ),
    ]
    return await proxy_client(chain)


def exposed(resp: Any) -> set[str]:
    return {h.strip().lower() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}


async def test_headers_the_client_requires_survive_and_are_exposed(
    client: Any, electric_upstream: RunningUpstream
) -> None:
    """The TS client throws MissingHeadersError without these (protocol notes §11.2)."""
    headers = {"Origin": APP, **auth(ALICE)}
    first = await client.get("/v1/shape?offset=-1", headers=headers)
    assert first.status == 200
    for name in ("electric-handle", "electric-offset", "electric-schema"):
        assert name in first.headers and name in exposed(first)
    handle, offset = first.headers["electric-handle"], first.headers["electric-offset"]

    catch_up = await client.get(
        "/v1/shape", params={"offset": offset, "handle": handle}, headers=headers
    )
    assert catch_up.status == 200
    assert catch_up.headers["electric-up-to-date"] == ""
    offset = catch_up.headers["electric-offset"]

    electric_upstream.electric.insert(
        "todos", {"id": 10, "org_id": "acme", "title": "new", "done": False}
    )
    live = await client.get(
        "/v1/shape",
        params={"offset": offset, "handle": handle, "live": "true", "cursor": "0"},
        headers=headers,
    )
    assert live.status == 200
    assert {"electric-cursor", "electric-offset", "electric-handle"} <= set(
        k.lower() for k in live.headers
    )
    assert [m["value"]["title"] for m in await live.json() if "value" in m] == ["new"]


async def test_nothing_the_proxy_writes_contains_a_secret(
    client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    written: list[str] = []

    async def call(method: str, url: str, **kwargs: Any) -> None:
        resp = await client.request(method, url, **kwargs)
        written.append(str(resp.status) + repr(list(resp.headers.items())) + await resp.text())

    await call("GET", "/v1/shape?offset=-1", headers=auth(ALICE))
    await call("GET", "/v1/shape?offset=-1&secret=x&api_secret=y", headers=auth(BOB))
    await call("GET", "/v1/shape?offset=-1", headers={"Authorization": "Bearer wrong-token-123"})
    await call("GET", "/v1/shape?offset=-1&where=true)%20OR%20(true", headers=auth(ALICE))
    await call("GET", "/v1/shape?offset=0_0&handle=bogus", headers=auth(ALICE))
    await call("POST", "/v1/shape?offset=-1", json={"table": "x"}, headers=auth(ALICE))
    await call(
        "OPTIONS", "/v1/shape", headers={"Origin": APP, "Access-Control-Request-Method": "GET"}
    )
    await electric_upstream.server.close()
    # Not a request the shape cache holds: this one must reach the closed upstream.
    await call("GET", "/v1/shape?offset=-1&cache-buster=1", headers=auth(ALICE))

    assert written[-1].startswith("502")
    everything = "\n".join(written) + caplog.text
    for secret in (electric_upstream.secret, ALICE, BOB):
        assert secret not in everything
    assert caplog.text  # the scan covered real log output
