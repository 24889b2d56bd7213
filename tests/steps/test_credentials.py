"""Credential injection: the upstream gets them, the client never does."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from conftest import standard_chain

from electric_proxy import Credentials
from electric_proxy.testing import ALICE, RunningUpstream, auth


async def test_secret_is_injected_and_client_credentials_dropped(
    proxy_client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await proxy_client(standard_chain(electric_upstream))
    resp = await client.get(
        "/v1/shape",
        params={
            "offset": "-1",
            "secret": "client-guess",
            "api_secret": "x",
            "source_secret": "y",
            "source_id": "z",
        },
        headers=auth(ALICE),
    )
    assert resp.status == 200
    sent = electric_upstream.electric.requests[-1].query
    assert sent.getall("secret") == [electric_upstream.secret]
    assert {"api_secret", "source_secret", "source_id"}.isdisjoint(sent)
    seen_by_client = str(resp.headers) + await resp.text()
    assert electric_upstream.secret not in seen_by_client
    assert electric_upstream.secret not in caplog.text


async def test_wrong_secret_shows_the_upstreams_401_without_leaking(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    chain = standard_chain(electric_upstream)
    chain[-1] = Credentials(secret="wrong-secret-value-x")
    client = await proxy_client(chain)
    resp = await client.get("/v1/shape?offset=-1", headers=auth(ALICE))
    assert resp.status == 401
    assert "wrong-secret-value-x" not in await resp.text()


@pytest.mark.parametrize("param", ["api_secret", "source_secret"])
async def test_secret_parameter_name_is_configurable(
    proxy_client: Any, electric_upstream: RunningUpstream, param: str
) -> None:
    chain = standard_chain(electric_upstream)
    chain[-1] = Credentials(secret=electric_upstream.secret, source_id="src-1", secret_param=param)
    client = await proxy_client(chain)
    await client.get("/v1/shape?offset=-1", headers=auth(ALICE))
    sent = electric_upstream.electric.requests[-1].query
    assert sent[param] == electric_upstream.secret
    assert sent["source_id"] == "src-1"
    assert "secret" not in sent or param == "secret"
