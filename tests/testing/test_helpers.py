"""The kit's helpers: shape messages, polling, real-port serving, a plugin that loads lazily."""

from __future__ import annotations

import subprocess
import sys

import aiohttp
import pytest
from aiohttp import web

from electric_proxy.testing import eventually, live_params, serve_app, shape_messages

MESSAGES = [
    {"key": '"public"."todos"/"1"', "value": {"id": "1"}, "headers": {"operation": "insert"}},
    {"key": '"public"."todos"/"1"', "value": {"id": "1"}, "headers": {"operation": "delete"}},
    {"headers": {"control": "snapshot-end", "xmin": "1"}},
    {"headers": {"control": "up-to-date", "global_last_seen_lsn": "0"}},
]


def test_shape_messages_splits_changes_from_controls() -> None:
    decoded = shape_messages(MESSAGES)
    assert [(c.key, c.operation) for c in decoded.changes] == [
        ('"public"."todos"/"1"', "insert"),
        ('"public"."todos"/"1"', "delete"),
    ]
    assert decoded.rows == [{"id": "1"}, {"id": "1"}]
    assert decoded.controls == ("snapshot-end", "up-to-date")
    assert decoded.up_to_date
    assert shape_messages(b"[]") == shape_messages("[]") == shape_messages([])


def test_shape_messages_refuses_what_is_neither() -> None:
    with pytest.raises(AssertionError, match="neither a change nor a control"):
        shape_messages([{"value": {"id": "1"}}])


def test_live_params_waits_after_the_response_it_is_given() -> None:
    headers = {"electric-handle": "h-7", "electric-offset": "3_1", "electric-cursor": "9"}
    assert live_params(headers, table="todos", cursor="a") == {
        "table": "todos",
        "cursor": "a",
        "handle": "h-7",
        "offset": "3_1",
        "live": "true",
    }
    with pytest.raises(KeyError):
        live_params({"electric-offset": "0_0"})  # not a shape response: no handle


async def test_eventually_waits_then_fails_with_its_message() -> None:
    calls: list[int] = []
    await eventually(lambda: calls.append(1) or len(calls) > 3)
    assert len(calls) == 4
    with pytest.raises(AssertionError, match="still 4"):
        await eventually(lambda: False, within=0.05, message=lambda: f"still {len(calls)}")


async def test_serve_app_answers_on_a_real_port_and_stops() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    async with (
        serve_app(app) as origin,
        aiohttp.ClientSession() as session,
        session.get(origin) as resp,
    ):
        assert await resp.text() == "hi"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(origin)


def test_the_pytest_plugin_imports_nothing_heavy() -> None:
    """pytest imports the plugin in every project of the environment: it must not import the
    proxy (pydantic, pglast, joserfc) until a test asks for a fixture."""
    code = (
        "import sys, _electric_proxy_pytest\n"
        "heavy = {'electric_proxy', 'pydantic', 'pglast', 'joserfc'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
