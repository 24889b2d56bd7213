"""The access log: one line per request, with what an operator needs and nothing secret."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from conftest import standard_chain
from multidict import MultiDict

from electric_proxy import (
    AccessLogger,
    BearerAuth,
    JsonAccessLogger,
    Principal,
    RequestId,
    ShapeProxy,
)
from electric_proxy.access_log import LOGGER_NAME, access_log_options, safe_query
from electric_proxy.testing import ALICE, RunningUpstream, auth

CLIENT_SECRET = "client-guess-of-the-secret-77"


def test_safe_query_keeps_positions_and_hides_filters_and_credentials() -> None:
    query = MultiDict(
        [
            ("offset", "0_0"),
            ("handle", "123-456"),
            ("live", "true"),
            ("table", "todos"),
            ("columns", "id,title"),
            ("where", "salary > 100000"),
            ("params[1]", "acme"),
            ("secret", CLIENT_SECRET),
            ("api_secret", CLIENT_SECRET),
            ("source_secret", CLIENT_SECRET),
            ("source_id", "src-1234"),
            ("subset__where", "title = $1"),
            ("subset__params[1]", "x"),
            ("token", "some-token-in-a-query"),
        ]
    )
    assert safe_query(query.items()) == (
        "offset=0_0&handle=123-456&live=true&table=todos&columns=id,title&where=***"
        "&params[1]=***&secret=***&api_secret=***&source_secret=***&source_id=***"
        "&subset__where=***&subset__params[1]=***"
    )


async def logged_client(
    aiohttp_client: Any,
    aiohttp_server: Any,
    upstream: RunningUpstream,
    cls: type[AccessLogger],
    chain: list[Any] | None = None,
) -> Any:
    if chain is None:
        chain = [
            RequestId(),
            *standard_chain(upstream, client_where=True, filter_columns={"done": "bool"}),
        ]
    proxy = ShapeProxy(upstream=upstream.url, chain=chain)
    server = await aiohttp_server(
        proxy.app(), access_log_class=cls, access_log=logging.getLogger(LOGGER_NAME)
    )
    return await aiohttp_client(server)


async def test_text_lines(
    aiohttp_client: Any,
    aiohttp_server: Any,
    electric_upstream: RunningUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER_NAME)
    client = await logged_client(aiohttp_client, aiohttp_server, electric_upstream, AccessLogger)
    query = {
        "offset": "-1",
        "where": "done = $1",
        "params[1]": "true",
        "secret": CLIENT_SECRET,
        "source_id": "src-guess",
    }
    resp = await client.get("/v1/shape", params=query, headers=auth(ALICE))
    assert resp.status == 200
    await resp.read()
    request_id = resp.headers["X-Request-ID"]
    assert (await client.get("/v1/shape", params={"offset": "-1"})).status == 401
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    assert len(lines) == 2
    first, second = lines
    assert first.startswith('127.0.0.1 "GET /v1/shape?offset=-1&where=***&params[1]=***')
    assert f"request_id={request_id}" in first
    assert "principal=alice upstream=200" in first
    assert '"GET /v1/shape?offset=-1" 401 ' in second
    assert "principal=- upstream=-" in second
    for leak in (
        CLIENT_SECRET,
        "src-guess",
        "done = ",
        "done%20%3D",
        ALICE,
        electric_upstream.secret,
    ):
        assert leak not in caplog.text


async def test_json_lines(
    aiohttp_client: Any,
    aiohttp_server: Any,
    electric_upstream: RunningUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER_NAME)
    client = await logged_client(
        aiohttp_client, aiohttp_server, electric_upstream, JsonAccessLogger
    )
    params = {"offset": "-1", "api_secret": CLIENT_SECRET}
    resp = await client.get("/v1/shape", params=params, headers=auth(ALICE))
    assert resp.status == 200
    await resp.read()
    (line,) = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    entry = json.loads(line)
    assert entry["method"] == "GET" and entry["path"] == "/v1/shape"
    assert entry["query"] == "offset=-1&api_secret=***"
    assert entry["status"] == 200 and entry["upstream_status"] == 200
    assert entry["principal"] == "alice"
    assert entry["request_id"] == resp.headers["X-Request-ID"]
    assert entry["bytes"] > 0 and entry["duration_s"] >= 0
    assert entry["time"].endswith("+00:00")
    assert CLIENT_SECRET not in caplog.text and ALICE not in caplog.text


async def test_text_fields_cannot_forge_lines(
    aiohttp_client: Any,
    aiohttp_server: Any,
    electric_upstream: RunningUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def odd_user(request: Any) -> Principal:
        return Principal('eve\n127.0.0.1 "GET /forged" 200', {"org_id": "acme"})

    caplog.set_level(logging.INFO, LOGGER_NAME)
    chain = [BearerAuth(callback=odd_user), *standard_chain(electric_upstream)[1:]]
    client = await logged_client(
        aiohttp_client, aiohttp_server, electric_upstream, AccessLogger, chain
    )
    resp = await client.get("/v1/shape%0A", params={"offset": "-1"})
    assert resp.status == 404
    resp = await client.get("/v1/shape", params={"offset": "-1", "cursor": 'x"\ny'})
    (missing, line) = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    assert '"GET /v1/shape%0A?offset=-1" 404' in missing
    assert "\n" not in line
    assert "principal=eve%0A127.0.0.1%20%22GET%20/forged%22%20200 " in line
    assert "cursor=x%22%0Ay" in line


def test_access_log_options(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger(LOGGER_NAME)
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)
    assert access_log_options("off") == {"access_log": None}
    text = access_log_options("text")
    assert text["access_log_class"] is AccessLogger
    assert text["access_log"] is logger and logger.propagate
    assert access_log_options("json")["access_log_class"] is JsonAccessLogger
    # JSON lines stand alone: their own handler, no text prefix from the root's format.
    assert not logger.propagate and len(logger.handlers) == 1
