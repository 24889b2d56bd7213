"""Request IDs and client addresses: trusted only from configured proxies."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web
from conftest import standard_chain

from electric_proxy import CLIENT_IP, Handler, RequestId, RequestIdLogFilter
from electric_proxy.testing import ALICE, RunningUpstream, auth


def recorder(seen: list[str]) -> Any:
    async def step(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append(request[CLIENT_IP])
        logging.getLogger("electric_proxy.test").warning("inside the chain")
        return await handler(request)

    return step


@pytest.mark.parametrize(
    ("trusted", "expect_kept", "expect_ip"),
    [(["127.0.0.0/8"], True, "203.0.113.9"), ([], False, "127.0.0.1")],
    ids=["trusted-peer", "untrusted-peer"],
)
async def test_ids_and_forwarded_for_only_from_trusted_peers(
    proxy_client: Any,
    electric_upstream: RunningUpstream,
    caplog: pytest.LogCaptureFixture,
    trusted: list[str],
    expect_kept: bool,
    expect_ip: str,
) -> None:
    seen: list[str] = []
    client = await proxy_client(
        [RequestId(trusted_proxies=trusted), recorder(seen), *standard_chain(electric_upstream)]
    )
    caplog.handler.addFilter(RequestIdLogFilter())
    offered = "caller-supplied-id-0123456789"
    resp = await client.get(
        "/v1/shape?offset=-1",
        headers={
            **auth(ALICE),
            "X-Request-ID": offered,
            "X-Forwarded-For": "198.51.100.7, 203.0.113.9",
        },
    )
    request_id = resp.headers["X-Request-ID"]
    assert (request_id == offered) is expect_kept
    assert len(resp.headers.getall("X-Request-ID")) == 1
    sent = electric_upstream.electric.requests[-1].headers
    assert sent["X-Request-ID"] == request_id
    assert "X-Forwarded-For" not in sent
    assert seen == [expect_ip]
    [record] = [r for r in caplog.records if r.name == "electric_proxy.test"]
    assert record.request_id == request_id  # type: ignore[attr-defined]


async def test_garbage_ids_are_replaced(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    client = await proxy_client(
        [RequestId(trusted_proxies=["127.0.0.0/8"]), *standard_chain(electric_upstream)]
    )
    resp = await client.get(
        "/v1/shape?offset=-1", headers={**auth(ALICE), "X-Request-ID": "a b<script>"}
    )
    assert resp.headers["X-Request-ID"] != "a b<script>"
    assert len(resp.headers["X-Request-ID"]) == 32
