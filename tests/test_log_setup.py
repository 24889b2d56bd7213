"""`[server] log_format = "json"`: every line `electric-proxy serve` writes is a JSON object,
whoever wrote it, and none holds a token, a secret or a query value."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import send_raw
from test_ops_serve import CHAIN as BEARER_AND_CREDENTIALS

from electric_proxy import ConfigError, JsonAccessLogger, parse_config
from electric_proxy.config import ServerSettings
from electric_proxy.log_setup import log_loop_exception
from electric_proxy.logs import JsonLogFormatter, SafeTextFormatter, bind_request_id
from electric_proxy.testing import free_port, read_until, start_cli

SECRET = "json-logs-secret-0123456789"
TOKEN = "json-logs-token-alice-0123456789"
REFUSED = "json-logs-token-nobody-0123456789"
FILTER = "json_logs_filter_canary"
ELECTRIC_HEADERS = {"electric-handle": "h-1", "electric-offset": "0_0", "electric-schema": "{}"}
LEAKS = (SECRET, TOKEN, REFUSED, FILTER)
UNPLUGGED = "13_37"
# The request_id step binds an ID to every line logged while a request is handled.
CHAIN = '[[chain]]\nuse = "request_id"\n' + BEARER_AND_CREDENTIALS


async def shape(request: web.Request) -> web.Response:
    """Electric, except that it drops the connection at :data:`UNPLUGGED` (a 502)."""
    if request.query.get("offset") == UNPLUGGED:
        assert request.transport is not None
        request.transport.close()
    return web.json_response([{"headers": {"control": "up-to-date"}}], headers=ELECTRIC_HEADERS)


def parse_lines(output: str) -> list[dict[str, Any]]:
    entries = []
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n{output}") from None
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
        entries.append(entry)
    return entries


async def run(tmp_path: Path, config: str, *args: str) -> asyncio.subprocess.Process:
    path = tmp_path / "proxy.toml"
    path.write_text(config)
    env = {"ELECTRIC_SECRET": SECRET, "ALICE_TOKEN": TOKEN}
    return await start_cli("-v", "serve", "--config", str(path), *args, env=env)


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["single", "workers"])
async def test_every_line_of_serve_is_json(
    tmp_path: Path, aiohttp_server: Any, workers: list[str]
) -> None:
    upstream = web.Application()
    upstream.router.add_get("/v1/shape", shape)
    server = await aiohttp_server(upstream, access_log=None)
    port = free_port()
    # log_format alone: the access log keeps its default ("text") and follows it.
    config = (
        f'[server]\nport = {port}\nlog_format = "json"\n'
        f'[upstream]\nurl = "{server.make_url("/v1/shape")}"\n{CHAIN}'
    )
    proc = await run(tmp_path, config, *workers)
    assert proc.stdout is not None
    output = ""
    try:
        for _ in range(2 if workers else 1):
            output += await read_until(proc.stdout, "serving" if workers else "Running on")
        url = f"http://127.0.0.1:{port}/v1/shape"
        alice = {"Authorization": f"Bearer {TOKEN}"}
        query = {"offset": "-1", "where": FILTER}
        async with aiohttp.ClientSession() as session:
            async with session.get(url, params=query, headers=alice) as resp:
                assert resp.status == 200
                request_id = resp.headers["X-Request-ID"]
            refused = {"Authorization": f"Bearer {REFUSED}"}
            async with session.get(url, params=query, headers=refused) as resp:
                assert resp.status == 401
            unplugged = {**query, "offset": UNPLUGGED}
            async with session.get(url, params=unplugged, headers=alice) as resp:
                assert resp.status == 502
        raw = f"GET /v1/shape?where={FILTER} HTTP/1.1\nAuthorization: Bearer {TOKEN}\n\n"
        status, _, _ = await send_raw(port, raw.encode())
        assert status == 400
        proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
        output += rest.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, output

    entries = parse_lines(output)
    by_logger: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_logger.setdefault(entry["logger"], []).append(entry)
    # The access log as JSON objects of their own, beside the proxy's and aiohttp's lines.
    access = by_logger["electric_proxy.access"]
    assert sorted(entry["status"] for entry in access) == [200, 400, 401, 502]
    ok = next(entry for entry in access if entry["status"] == 200)
    assert ok["request_id"] == request_id and ok["message"] == "GET /v1/shape 200"
    assert ok["query"] == "offset=-1&where=***" and ok["level"] == "INFO"
    # The upstream failure, logged while the request was handled, carries its request ID.
    (failure,) = [e for e in entries if e["message"].startswith("upstream request failed")]
    assert failure["level"] == "WARNING" and failure.get("request_id", "-") != "-"
    assert any(e["message"].startswith("unparsable request") for e in entries)
    assert "request_id" not in next(e for e in access if e["status"] == 400)  # none bound
    assert any(e["logger"] == "electric_proxy.runtime" for e in entries)  # the event loop
    if workers:
        assert len(by_logger["electric_proxy.workers"]) >= 3  # listening, 2 x serving
    for leak in LEAKS:
        assert leak not in output


async def test_an_uncaught_exception_is_a_json_line(tmp_path: Path) -> None:
    """Serving cannot start (the metrics port is taken): Python's traceback is a JSON line,
    the exception's class and frames, not its message."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port = taken.getsockname()[1]
        config = (
            f'[server]\nport = {free_port()}\naccess_log = "json"\n'
            f'[upstream]\nurl = "http://127.0.0.1:9/v1/shape"\n{CHAIN}'
            f"[metrics]\nport = {metrics_port}\n"
        )
        proc = await run(tmp_path, config)
        output = (await asyncio.wait_for(proc.communicate(), 30))[0].decode()
    assert proc.returncode == 1
    entries = parse_lines(output)
    (uncaught,) = [e for e in entries if e["level"] == "CRITICAL"]
    assert uncaught["message"] == "uncaught OSError"
    assert uncaught["exception"] == "builtins.OSError"
    assert "(message withheld)" in uncaught["traceback"]
    assert "address already in use" not in output.lower()


def record(message: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(
        "electric_proxy.test", logging.ERROR, __file__, 1, message, (), exc_info
    )


def raised(message: str) -> BaseException:
    try:
        try:
            raise KeyError(message)
        except KeyError as exc:
            raise ValueError(message) from exc
    except ValueError as exc:
        return exc


def test_the_formatters_show_an_exception_by_class_and_frames() -> None:
    exc = raised(f"Bearer {TOKEN}")
    entry = json.loads(JsonLogFormatter().format(record("the step failed", exc)))
    assert entry["message"] == "the step failed" and entry["level"] == "ERROR"
    assert entry["exception"] == "builtins.ValueError"
    assert "builtins.KeyError (message withheld)" in entry["traceback"]
    assert "in raised" in entry["traceback"]  # the frames are kept
    text = SafeTextFormatter("%(levelname)s %(message)s").format(record("the step failed", exc))
    assert text.startswith("ERROR the step failed\nbuiltins.ValueError (message withheld)")
    # A record another handler already formatted the usual way is shown safely too.
    shared = record("again", exc)
    logging.Formatter().format(shared)
    assert TOKEN in (shared.exc_text or "")
    for line in (JsonLogFormatter().format(shared), SafeTextFormatter().format(shared)):
        assert TOKEN not in line


def test_a_json_line_has_the_bound_request_id_and_survives_bad_arguments() -> None:
    async def in_a_request() -> str:
        bind_request_id("req-7")
        bad = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items", ("many",), None)
        return JsonLogFormatter().format(bad)

    entry = json.loads(asyncio.run(in_a_request()))
    assert entry["request_id"] == "req-7" and entry["message"] == "%d items"
    assert "request_id" not in json.loads(JsonLogFormatter().format(record("outside")))


async def test_the_loop_logs_a_lost_task_exception_without_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    exc = raised(f"token {TOKEN}")
    task = loop.create_future()
    task.set_exception(exc)
    with caplog.at_level(logging.ERROR, "asyncio"):
        log_loop_exception(
            loop,
            {"message": "Task exception was never retrieved", "exception": exc, "future": task},
        )
    task.exception()  # retrieved: no warning from the future itself
    (entry,) = [json.loads(JsonLogFormatter().format(r)) for r in caplog.records]
    assert entry["logger"] == "asyncio" and entry["exception"] == "builtins.ValueError"
    assert TOKEN not in json.dumps(entry)
    assert sys.exc_info() == (None, None, None)


UPSTREAM = {"upstream": {"url": "http://electric:3000/v1/shape"}}


def test_one_setting_decides_the_form_of_every_line() -> None:
    def server(**options: str) -> ServerSettings:
        return parse_config({**UPSTREAM, "server": options}).server

    assert server().log_format == "text"
    # A JSON access log is for a pipeline that parses every line: it asks for JSON everywhere.
    assert server(access_log="json").log_format == "json"
    # The access log follows the format of the other lines; "off" is still off.
    options = server(log_format="json").run_app_options()
    assert options["access_log_class"] is JsonAccessLogger
    assert server(log_format="json", access_log="off").run_app_options()["access_log"] is None
    with pytest.raises(ConfigError) as caught:
        server(log_format="text", access_log="json")
    (problem,) = caught.value.problems
    assert problem.startswith("server: ") and "would mix JSON and text lines" in problem
