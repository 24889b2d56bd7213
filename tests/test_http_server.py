"""Requests aiohttp's parser rejects: no request byte in any log line nor in the answer.

The four malformed requests every client library refuses to send, so they go as raw bytes
on a real socket; each carries the bearer token and a filter value, and every log line the
process writes (all loggers, DEBUG included) and every answer is scanned for both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from conftest import send_raw
from test_cli import serving
from yarl import URL

from electric_proxy import ProxyRunner, ShapeProxy, server_options
from electric_proxy.testing import RunningUpstream, read_until, serve_app

TOKEN = b"leak-canary-token-0123456789"
FILTER = b"leak_canary_filter"
HEAD = b"GET /v1/shape?offset=-1&where=" + FILTER + b" HTTP/1.1\r\nHost: proxy\r\n"
MALFORMED = {
    "bare LF line ends": HEAD.replace(b"\r\n", b"\n") + b"Authorization: Bearer " + TOKEN + b"\n\n",
    "control character in Authorization": HEAD
    + b"Authorization: Bearer "
    + TOKEN
    + b"\x01\r\n\r\n",
    "space before the colon": HEAD + b"Authorization : Bearer " + TOKEN + b"\r\n\r\n",
    "request line over 8190 bytes": HEAD.replace(FILTER, FILTER + b"x" * 9000)
    + b"Authorization: Bearer "
    + TOKEN
    + b"\r\n\r\n",
    "header over 8190 bytes": HEAD + b"Authorization: Bearer " + TOKEN + b"x" * 9000 + b"\r\n\r\n",
}


def leaks(text: str | bytes) -> list[bytes]:
    data = text.encode() if isinstance(text, str) else text
    return [secret for secret in (TOKEN, FILTER) if secret in data]


def assert_json_400(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"] == "bad_request"
    assert headers["server"] == "electric-proxy"
    assert leaks(body) == []


@pytest.fixture
def every_log_line(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.name} {caplog.handler.format(r)}" for r in caplog.records)


async def test_proxy_runner_answers_json_and_logs_no_request_bytes(
    electric_upstream: RunningUpstream, every_log_line: pytest.LogCaptureFixture
) -> None:
    runner = ProxyRunner(ShapeProxy(upstream=electric_upstream.url).app())
    async with serve_app(runner) as origin:
        for raw in MALFORMED.values():
            assert_json_400(*await send_raw(URL(origin).port or 0, raw))
    text = logged(every_log_line)
    assert "unparsable request" in text
    assert leaks(text) == []


async def test_plain_app_runner_with_server_options_logs_no_request_bytes(
    every_log_line: pytest.LogCaptureFixture,
) -> None:
    """What an embedder gets from ``web.run_app(app, **server_options())``: a clean log
    (the 400 body is aiohttp's own; only :class:`ProxyRunner` replaces it)."""
    app = web.Application()
    async with serve_app(web.AppRunner(app, **server_options())) as origin:
        for raw in MALFORMED.values():
            status, _, _ = await send_raw(URL(origin).port or 0, raw)
            assert status == 400
    text = logged(every_log_line)
    assert "Error handling request" in text and "BadStatusLine" in text
    assert leaks(text) == []


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["single", "workers"])
async def test_serve_answers_and_logs_malformed_requests_safely(
    tmp_path: Path, workers: list[str]
) -> None:
    chain = '[[chain]]\nuse = "credentials"\nsecret = "upstream-secret-0123456789"\n'
    async with serving(tmp_path, chain, *workers) as served:
        # Workers accept on the supervisor's socket, which listens before they start.
        served.output += await read_until(served.stdout, "serving" if workers else "Running on")
        port = int(served.url.split(":")[2].split("/")[0])
        answers = [await send_raw(port, raw) for raw in MALFORMED.values()]
    for answer in answers:
        assert_json_400(*answer)
    assert served.output.count("unparsable request") == len(MALFORMED), served.output
    assert leaks(served.output) == []
