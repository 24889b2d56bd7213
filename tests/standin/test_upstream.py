"""FakeElectric speaks the shape protocol the way Electric 1.7 does, over real sockets.

The proxy's own tests trust this upstream, so these tests pin the behaviour they rely on:
the initial-sync/catch-up/live loop, shape-aware change routing, 409s, Electric's error
bodies and cache headers, SSE framing, subsets and the POST merge hazard.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from electric_proxy.standin import Column, FakeElectric

Client = TestClient[Any, Any]
Messages = list[dict[str, Any]]

TODO_COLUMNS = [
    Column("id", "int8", primary_key=True, not_null=True),
    Column("org_id", "text", not_null=True),
    Column("title", "text"),
    Column("done", "bool"),
    Column("priority", "int4"),
]
TODOS: list[Mapping[str, object]] = [
    {"id": 1, "org_id": "acme", "title": "Ship the proxy", "done": False, "priority": 3},
    {"id": 2, "org_id": "acme", "title": None, "done": True, "priority": None},
    {"id": 3, "org_id": "globex", "title": "Plan the launch", "done": False, "priority": 1},
    {"id": 4, "org_id": "globex", "title": "Hire a designer", "done": None, "priority": 5},
    {"id": 5, "org_id": "acme", "title": "Write docs", "done": False, "priority": 2},
]


def make_electric(**options: Any) -> FakeElectric:
    options.setdefault("long_poll_timeout", 0.5)
    electric = FakeElectric(**options)
    electric.add_table("todos", TODO_COLUMNS, TODOS)
    electric.add_table(
        "public.secrets",
        [Column("id", "int4", primary_key=True), Column("value")],
        [{"id": 1, "value": "s3cr3t"}],
    )
    return electric


@pytest.fixture
def electric() -> FakeElectric:
    return make_electric()


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, electric: FakeElectric) -> Client:
    return await aiohttp_client(electric.app())


async def shape(client: Client, **params: str) -> tuple[ClientResponse, Any]:
    resp = await client.get("/v1/shape", params=params)
    body = await resp.json() if resp.status != 304 else None
    return resp, body


async def sync_to_end(client: Client, **params: str) -> tuple[str, str, Messages]:
    """Run the client loop from offset -1 until up-to-date: (handle, offset, messages)."""
    resp, body = await shape(client, offset="-1", **params)
    messages: Messages = list(body)
    handle, offset = resp.headers["electric-handle"], resp.headers["electric-offset"]
    while "electric-up-to-date" not in resp.headers:
        resp, body = await shape(client, handle=handle, offset=offset, **params)
        assert resp.status == 200
        messages += body
        offset = resp.headers["electric-offset"]
    return handle, offset, messages


def rows_of(messages: Messages) -> list[dict[str, Any]]:
    return [m["value"] for m in messages if m.get("headers", {}).get("operation") == "insert"]


def controls(messages: Messages) -> list[str]:
    return [m["headers"]["control"] for m in messages if "control" in m["headers"]]


async def test_initial_sync_in_chunks_then_up_to_date(aiohttp_client: AiohttpClient) -> None:
    electric = make_electric(chunk_rows=2)
    client = await aiohttp_client(electric.app())

    first, body = await shape(client, table="todos", offset="-1")
    assert first.status == 200
    assert "electric-up-to-date" not in first.headers
    assert first.headers["electric-offset"] == "0_0"
    assert first.headers["cache-control"] == (
        "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746"
    )
    assert first.headers["content-type"] == "application/json"
    handle = first.headers["electric-handle"]
    digest, _, micros = handle.partition("-")
    assert digest.isdigit() and micros.isdigit() and len(micros) >= 16
    assert first.headers["etag"] == f'"{handle}:-1:0_0"'
    assert json.loads(first.headers["electric-schema"])["id"] == {
        "type": "int8",
        "pk_index": 0,
        "not_null": True,
    }
    assert first.headers["electric-has-data"] == "true"
    assert [row["id"] for row in rows_of(body)] == ["1", "2"]
    assert body[0] == {
        "key": '"public"."todos"/"1"',
        "value": {
            "id": "1",
            "org_id": "acme",
            "title": "Ship the proxy",
            "done": "false",
            "priority": "3",
        },
        "headers": {"operation": "insert", "relation": ["public", "todos"]},
    }

    second, body = await shape(client, table="todos", offset="0_0", handle=handle)
    assert second.headers["electric-offset"] == "0_1"
    assert second.headers["cache-control"] == "public, max-age=60, stale-while-revalidate=300"
    assert "electric-up-to-date" not in second.headers
    assert rows_of(body)[1] == {
        "id": "4",
        "org_id": "globex",
        "title": "Hire a designer",
        "done": None,
        "priority": "5",
    }

    last, body = await shape(client, table="todos", offset="0_1", handle=handle)
    assert last.headers["electric-up-to-date"] == ""
    assert controls(body) == ["snapshot-end", "up-to-date"]
    assert body[-1] == {"headers": {"control": "up-to-date", "global_last_seen_lsn": "24000000"}}
    assert rows_of(body) == [
        {"id": "5", "org_id": "acme", "title": "Write docs", "done": "false", "priority": "2"}
    ]


async def test_single_chunk_still_needs_a_second_request(client: Client) -> None:
    resp, body = await shape(client, table="todos", offset="-1")
    assert "electric-up-to-date" not in resp.headers
    assert controls(body) == ["snapshot-end"]
    handle = resp.headers["electric-handle"]
    resp, body = await shape(client, table="todos", offset="0_0", handle=handle)
    assert resp.headers["electric-up-to-date"] == ""
    assert body == [{"headers": {"control": "up-to-date", "global_last_seen_lsn": "24000000"}}]
    again, _ = await shape(client, table="todos", offset="-1")
    assert again.headers["electric-handle"] == handle


async def test_catch_up_after_changes(client: Client, electric: FakeElectric) -> None:
    handle, offset, _ = await sync_to_end(client, table="todos")
    electric.insert("todos", {"id": 6, "org_id": "acme", "title": "New"})
    electric.update("todos", {"id": 1, "done": True})
    electric.delete("todos", {"id": 2})

    resp, body = await shape(client, table="todos", handle=handle, offset=offset)
    assert resp.status == 200
    assert resp.headers["electric-up-to-date"] == ""
    inserted, updated, deleted, up_to_date = body
    assert inserted["value"] == {
        "id": "6",
        "org_id": "acme",
        "title": "New",
        "done": None,
        "priority": None,
    }
    assert inserted["headers"] == {
        "operation": "insert",
        "relation": ["public", "todos"],
        "txids": [1000],
        "lsn": "24000128",
        "op_position": 0,
        "last": True,
    }
    assert updated["value"] == {"id": "1", "done": "true"}
    assert updated["headers"]["operation"] == "update"
    assert deleted == {
        "key": '"public"."todos"/"2"',
        "value": {"id": "2"},
        "headers": {
            "operation": "delete",
            "relation": ["public", "todos"],
            "txids": [1002],
            "lsn": "24000384",
            "op_position": 0,
            "last": True,
        },
    }
    assert up_to_date["headers"]["global_last_seen_lsn"] == "24000384"
    assert resp.headers["electric-offset"] == "24000384_0"
    assert resp.headers["etag"] == f'"{handle}:{offset}:24000384_0"'

    now, body = await shape(client, table="todos", offset="now")
    assert now.headers["electric-offset"] == "24000384_0"
    assert now.headers["electric-has-data"] == "false"
    assert body == [{"headers": {"control": "up-to-date", "global_last_seen_lsn": "24000384"}}]


async def test_live_long_poll_is_woken_by_an_insert(client: Client, electric: FakeElectric) -> None:
    handle, offset, _ = await sync_to_end(client, table="todos")
    waiters = [
        asyncio.create_task(
            shape(client, table="todos", handle=handle, offset=offset, live="true", cursor=str(n))
        )
        for n in range(12)
    ]
    await electric.wait_until(lambda: electric.held == 12)
    electric.insert("todos", {"id": 7, "org_id": "globex", "title": "Woken"})

    answers = await asyncio.gather(*waiters)
    assert electric.held == 0
    for resp, body in answers:
        assert resp.status == 200
        assert resp.headers["cache-control"] == "public, max-age=5, stale-while-revalidate=5"
        assert "electric-cursor" in resp.headers
        assert "electric-schema" not in resp.headers
        assert resp.headers["electric-has-data"] == "true"
        assert [m["value"]["title"] for m in body[:-1]] == ["Woken"]
        assert controls(body) == ["up-to-date"]


async def test_live_long_poll_times_out_without_data(
    client: Client, electric: FakeElectric
) -> None:
    handle, offset, _ = await sync_to_end(client, table="todos")
    resp, body = await shape(client, table="todos", handle=handle, offset=offset, live="true")
    assert resp.status == 200
    assert resp.headers["electric-has-data"] == "false"
    assert resp.headers["electric-up-to-date"] == ""
    assert resp.headers["electric-offset"] == offset
    assert resp.headers["etag"].strip('"').count(":") == 3
    assert body == [{"headers": {"control": "up-to-date", "global_last_seen_lsn": "24000000"}}]


async def test_cursor_moves_past_the_clients(aiohttp_client: AiohttpClient) -> None:
    electric = make_electric(long_poll_timeout=20.0)
    client = await aiohttp_client(electric.app())
    handle, offset, _ = await sync_to_end(client, table="todos")
    electric.insert("todos", {"id": 9, "org_id": "acme"})
    resp, _ = await shape(client, table="todos", handle=handle, offset=offset, live="true")
    cursor = int(resp.headers["electric-cursor"])
    assert cursor % 20 == 0
    electric.insert("todos", {"id": 10, "org_id": "acme"})
    resp, _ = await shape(
        client, table="todos", handle=handle, offset=offset, live="true", cursor=str(cursor)
    )
    assert int(resp.headers["electric-cursor"]) > cursor


@pytest.mark.parametrize(
    ("where", "params", "expected"),
    [
        ("org_id = $1", {"params[1]": "acme"}, ["1", "2", "5"]),
        ("priority > $1", {"params[1]": "2"}, ["1", "4"]),
        ("title <> 'Write docs'", {}, ["1", "3", "4"]),
        ("title IS NULL OR done", {}, ["2"]),
        ("done IS NOT TRUE", {}, ["1", "3", "4", "5"]),
        ("NOT done", {}, ["1", "3", "5"]),
        ("priority NOT IN (1, NULL)", {}, []),
        ("priority IN (1, 5) AND org_id = $1", {"params[1]": "globex"}, ["3", "4"]),
        ("title ILIKE '%the%'", {}, ["1", "3"]),
        ("priority BETWEEN $1 AND $2", {"params[1]": "2", "params[2]": "3"}, ["1", "5"]),
        ("lower(org_id) = 'acme' AND coalesce(priority, 0) = 0", {}, ["2"]),
        ("id = ANY('{3,4}')", {}, ["3", "4"]),
    ],
)
async def test_where_filters_rows_with_sql_semantics(
    client: Client, where: str, params: dict[str, str], expected: list[str]
) -> None:
    _, _, messages = await sync_to_end(client, table="todos", where=where, **params)
    assert [row["id"] for row in rows_of(messages)] == expected


async def test_updates_move_rows_in_and_out_of_a_shape(
    client: Client, electric: FakeElectric
) -> None:
    query = {"table": "todos", "where": "done = $1", "params[1]": "false"}
    handle, offset, messages = await sync_to_end(client, **query)
    assert [row["id"] for row in rows_of(messages)] == ["1", "3", "5"]
    full_handle, full_offset, _ = await sync_to_end(client, replica="full", **query)
    assert full_handle != handle

    electric.update("todos", {"id": 1, "done": True})
    electric.update("todos", {"id": 4, "done": False})
    electric.update("todos", {"id": 3, "title": "Plan it"})
    electric.update("todos", {"id": 2, "title": "Unseen"})

    _, body = await shape(client, handle=handle, offset=offset, **query)
    assert [(m["headers"]["operation"], m["value"]) for m in body[:-1]] == [
        ("delete", {"id": "1"}),
        (
            "insert",
            {
                "id": "4",
                "org_id": "globex",
                "title": "Hire a designer",
                "done": "false",
                "priority": "5",
            },
        ),
        ("update", {"id": "3", "title": "Plan it"}),
    ]
    _, body = await shape(client, handle=full_handle, offset=full_offset, replica="full", **query)
    moved_out, _, updated = body[:-1]
    assert moved_out["value"]["title"] == "Ship the proxy"
    assert updated["value"]["org_id"] == "globex"
    assert updated["old_value"] == {"title": "Plan the launch"}


async def test_columns_select_a_projection(client: Client, electric: FakeElectric) -> None:
    handle, offset, messages = await sync_to_end(client, table="todos", columns="title,id")
    assert rows_of(messages)[0] == {"id": "1", "title": "Ship the proxy"}
    electric.update("todos", {"id": 1, "done": True})
    electric.update("todos", {"id": 1, "title": "Renamed"})
    _, body = await shape(client, table="todos", columns="id,title", handle=handle, offset=offset)
    assert [m["value"] for m in body[:-1]] == [{"id": "1", "title": "Renamed"}]


async def test_rotate_answers_409_with_the_new_handle(
    client: Client, electric: FakeElectric
) -> None:
    handle, offset, _ = await sync_to_end(client, table="todos")
    held = asyncio.create_task(
        shape(client, table="todos", handle=handle, offset=offset, live="true")
    )
    await electric.wait_until(lambda: electric.held == 1)
    electric.rotate("todos")
    (new_handle,) = electric.handles("todos")
    assert new_handle != handle

    resp, body = await held
    assert resp.status == 409
    assert resp.headers["electric-handle"] == new_handle
    assert body == [{"headers": {"control": "must-refetch"}}]

    resp, body = await shape(client, table="todos", handle=handle, offset=offset)
    assert resp.status == 409
    assert resp.headers["electric-handle"] == new_handle
    assert resp.headers["cache-control"] == "public, max-age=60, must-revalidate"
    assert "surrogate-control" not in resp.headers

    resp, body = await shape(client, table="todos", offset="-1", handle=handle)
    assert resp.status == 200
    assert resp.headers["electric-handle"] == new_handle
    assert len(rows_of(body)) == 5


async def test_bogus_handle_gets_409_and_creates_the_shape(
    client: Client, electric: FakeElectric
) -> None:
    resp, body = await shape(
        client, table="todos", where="org_id = 'acme'", handle="123-456", offset="0_0"
    )
    assert resp.status == 409
    assert body == [{"headers": {"control": "must-refetch"}}]
    assert electric.handles("todos") == [resp.headers["electric-handle"]]


async def test_secret_is_required_on_the_query(aiohttp_client: AiohttpClient) -> None:
    electric = make_electric(secret="s3cret")
    client = await aiohttp_client(electric.app())
    for params in ({}, {"secret": "wrong"}, {"secret": "wrong", "api_secret": "s3cret"}):
        resp = await client.get("/v1/shape", params={"table": "todos", "offset": "-1", **params})
        assert resp.status == 401
        assert await resp.json() == {"message": "Unauthorized - Invalid API secret"}
    resp = await client.get(
        "/v1/shape",
        params={"table": "todos", "offset": "-1"},
        headers={"Authorization": "Bearer s3cret", "secret": "s3cret"},
    )
    assert resp.status == 401
    assert (await client.delete("/v1/shape")).status == 401
    ok = await client.get("/v1/shape?table=todos&offset=-1&secret=x&secret=s3cret")
    assert ok.status == 200
    legacy = await client.get(
        "/v1/shape", params={"table": "todos", "offset": "-1", "api_secret": "s3cret"}
    )
    assert legacy.status == 200
    assert (await client.options("/v1/shape")).status == 204
    assert (await client.get("/v1/health")).status == 200


@pytest.mark.parametrize(
    ("query", "errors"),
    [
        ({"offset": "-1"}, {"table": ["can't be blank"]}),
        ({"table": "todos"}, {"offset": ["can't be blank"]}),
        ({"table": "todos", "offset": "12"}, {"offset": ["has invalid format"]}),
        ({"table": "todos", "offset": "0_0"}, {"handle": ["can't be blank when offset != -1"]}),
        (
            {"table": "todos", "offset": "-1", "live": "true"},
            {"live": ["can't be true when offset == -1"]},
        ),
        ({"table": "todos", "offset": "-1", "replica": "partial"}, {"replica": ["is invalid"]}),
        (
            {"table": "nope", "offset": "-1"},
            {
                "table": [
                    'Table "public"."nope" does not exist. If the table name contains '
                    "capitals or special characters you must quote it."
                ]
            },
        ),
        (
            {"table": '"Todos"', "offset": "-1"},
            {
                "table": [
                    'Table "public"."Todos" does not exist. If the table name contains '
                    "capitals or special characters you must quote it."
                ]
            },
        ),
        (
            {"table": "todos", "offset": "-1", "where": "id = $1", "params[2]": "1"},
            {"params": ["Parameters must be numbered sequentially, starting from 1"]},
        ),
        (
            {"table": "todos", "offset": "-1", "where": "id = $1", "params[a]": "1"},
            {"params": ["Parameters can only use numbers as keys"]},
        ),
        (
            {"table": "todos", "offset": "-1", "where": "id = $2", "params[1]": "1"},
            {"where": ["At location 5: parameter $2 was not provided"]},
        ),
        (
            {"table": "todos", "offset": "-1", "where": "CASE WHEN done THEN true END"},
            {"where": ["At location 0: CaseExpr is not supported in this context"]},
        ),
        (
            {"table": "todos", "offset": "-1", "where": "nope = 1"},
            {"where": ["At location 0: unknown reference nope"]},
        ),
        (
            {"table": "todos", "offset": "-1", "where": "id = 'x'"},
            {"where": ["At location 5: invalid syntax for type int8: x"]},
        ),
        (
            {"table": "todos", "offset": "-1", "where": "id IN (SELECT id FROM secrets)"},
            {"where": ["Subqueries are not supported"]},
        ),
        (
            {"table": "todos", "offset": "-1", "where": "priority"},
            {"where": ["WHERE clause must return a boolean"]},
        ),
        (
            {"table": "todos", "offset": "-1", "columns": "title"},
            {"columns": ["The list of columns must include all primary key columns, missing: id"]},
        ),
        (
            {"table": "todos", "offset": "-1", "columns": "id,colour"},
            {"columns": ["The following columns are not found on the table: colour"]},
        ),
    ],
)
async def test_electric_style_400s(
    client: Client, query: dict[str, str], errors: dict[str, list[str]]
) -> None:
    resp = await client.get("/v1/shape", params=query)
    assert resp.status == 400
    assert await resp.json() == {"message": "Invalid request", "errors": errors}
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["surrogate-control"] == "no-store"


async def test_last_repeated_key_wins_and_unknown_keys_are_ignored(client: Client) -> None:
    resp = await client.get(
        "/v1/shape?table=secrets&table=todos&offset=-1&where=id%3D1&where=id%3D3&whatever=1"
    )
    body = await resp.json()
    assert [row["id"] for row in rows_of(body)] == ["3"]
    assert rows_of(body)[0]["org_id"] == "globex"


async def test_if_none_match_gets_304(client: Client) -> None:
    handle, offset, _ = await sync_to_end(client, table="todos")
    resp, _ = await shape(client, table="todos", handle=handle, offset="0_0")
    etag = resp.headers["etag"]
    again = await client.get(
        "/v1/shape",
        params={"table": "todos", "handle": handle, "offset": "0_0"},
        headers={"If-None-Match": f'"other", {etag}'},
    )
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["etag"] == etag
    assert again.headers["electric-handle"] == handle
    assert again.headers["electric-offset"] == offset


async def test_gzip_only_when_asked(aiohttp_client: AiohttpClient) -> None:
    electric = make_electric()
    client = await aiohttp_client(electric.app(), auto_decompress=False)
    zipped = await client.get(
        "/v1/shape",
        params={"table": "todos", "offset": "-1"},
        headers={"Accept-Encoding": "gzip, deflate"},
    )
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["transfer-encoding"] == "chunked"
    assert len(json.loads(gzip.decompress(await zipped.read()))) == 6
    plain = await client.get(
        "/v1/shape",
        params={"table": "todos", "offset": "-1"},
        headers={"Accept-Encoding": "identity"},
    )
    assert "content-encoding" not in plain.headers
    assert len(json.loads(await plain.read())) == 6
    quiet = await aiohttp_client(make_electric(compress=False).app(), auto_decompress=False)
    resp = await quiet.get(
        "/v1/shape", params={"table": "todos", "offset": "-1"}, headers={"Accept-Encoding": "gzip"}
    )
    assert "content-encoding" not in resp.headers


async def test_sse_framing_keepalive_and_end(aiohttp_client: AiohttpClient) -> None:
    electric = make_electric(sse_timeout=0.6, sse_keepalive=0.2)
    client = await aiohttp_client(electric.app())
    handle, offset, _ = await sync_to_end(client, table="todos")
    resp = await client.get(
        "/v1/shape",
        headers={"Accept-Encoding": "gzip"},
        params={
            "table": "todos",
            "handle": handle,
            "offset": offset,
            "live": "true",
            "experimental_live_sse": "true",
            "cursor": "5",
        },
    )
    assert resp.status == 200
    assert resp.headers["content-type"] == "text/event-stream"
    assert resp.headers["cache-control"] == "public, max-age=1"
    assert "content-encoding" not in resp.headers
    assert "electric-cursor" in resp.headers
    await electric.wait_until(lambda: electric.held == 1)
    electric.insert("todos", {"id": 8, "org_id": "acme", "title": "Streamed"})
    first = await resp.content.readuntil(b"\n\n")
    second = await resp.content.readuntil(b"\n\n")
    assert first.startswith(b"data: ")
    assert json.loads(first[6:])["value"]["title"] == "Streamed"
    assert json.loads(second[6:]) == {
        "headers": {"control": "up-to-date", "global_last_seen_lsn": "24000128"}
    }
    assert await resp.content.readuntil(b"\n\n") == b": keep-alive\n\n"
    assert (await resp.content.read()).count(b": keep-alive\n\n") >= 1
    assert electric.held == 0


async def test_sse_with_data_ready_writes_it_and_closes(
    client: Client, electric: FakeElectric
) -> None:
    handle, offset, _ = await sync_to_end(client, table="todos")
    electric.delete("todos", {"id": 5})
    resp = await client.get(
        "/v1/shape",
        params={
            "table": "todos",
            "handle": handle,
            "offset": offset,
            "live": "true",
            "live_sse": "true",
        },
    )
    text = await resp.text()
    events = [json.loads(chunk[6:]) for chunk in text.split("\n\n") if chunk]
    assert [e["headers"].get("operation", e["headers"].get("control")) for e in events] == [
        "delete",
        "up-to-date",
    ]


async def test_post_subset_snapshot(client: Client) -> None:
    handle, offset, _ = await sync_to_end(client, table="todos", where="org_id = 'acme'")
    resp = await client.post(
        "/v1/shape",
        params={"table": "todos", "where": "org_id = 'acme'", "handle": handle, "offset": offset},
        json={
            "where": "priority >= $1",
            "params": {"1": "2"},
            "order_by": "priority DESC",
            "limit": 5,
        },
    )
    assert resp.status == 200
    assert resp.headers["electric-snapshot"] == "true"
    assert resp.headers["cache-control"] == "no-cache"
    assert resp.headers["electric-handle"] == handle
    assert resp.headers["electric-offset"] == offset
    assert "electric-schema" in resp.headers
    body = await resp.json()
    assert set(body["metadata"]) == {"xmin", "xmax", "xip_list", "snapshot_mark", "database_lsn"}
    assert [m["value"]["id"] for m in body["data"]] == ["1", "5"]
    assert body["data"][0]["headers"]["snapshot_mark"] == body["metadata"]["snapshot_mark"]

    get = await client.get(
        "/v1/shape",
        params={
            "table": "todos",
            "where": "org_id = 'acme'",
            "handle": handle,
            "offset": offset,
            "subset__where": "title = $1",
            "subset__params": json.dumps({"1": "Write docs"}),
        },
    )
    assert [m["value"]["id"] for m in (await get.json())["data"]] == ["5"]

    bad = await client.post(
        "/v1/shape", params={"table": "todos", "offset": "-1"}, json={"limit": 2}
    )
    assert bad.status == 400
    assert bad.headers["cache-control"] == "no-cache"
    assert (await bad.json())["errors"] == {
        "subset": {"order_by": ["order_by is required when limit or offset is present"]}
    }
    broken = await client.post(
        "/v1/shape", params={"table": "todos", "offset": "-1"}, data=b"{nope"
    )
    assert broken.status == 400
    assert (await broken.json())["error"] == "Invalid JSON in request body"


async def test_post_body_replaces_the_query_definition(client: Client) -> None:
    """§9.2: Electric merges body keys over the query, so a raw body can escape the shape."""
    query = {"table": "todos", "where": "org_id = 'acme'", "offset": "-1"}
    escaped = await client.post(
        "/v1/shape",
        params=query,
        json={
            "where": "org_id = 'globex'",
            "subset": {"where": "true"},
        },
    )
    assert {m["value"]["org_id"] for m in (await escaped.json())["data"]} == {"globex"}

    whole_merge = await client.post(
        "/v1/shape",
        params=query,
        json={
            "table": "secrets",
            "where": "id > 0",
            "subset": {},
        },
    )
    assert [m["value"] for m in (await whole_merge.json())["data"]] == [
        {"id": "1", "value": "s3cr3t"}
    ]

    other_table = await client.post(
        "/v1/shape",
        params={"table": "todos", "offset": "-1"},
        json={"table": "secrets", "where": "true"},
    )
    assert [m["value"] for m in (await other_table.json())["data"]] == [
        {"id": "1", "value": "s3cr3t"}
    ]

    contained = await client.post("/v1/shape", params=query, json={"where": "true"})
    assert {m["value"]["org_id"] for m in (await contained.json())["data"]} == {"acme"}


async def test_requests_are_recorded(client: Client, electric: FakeElectric) -> None:
    await client.get(
        "/v1/shape?table=todos&offset=-1&params%5B1%5D=a&x=1&x=2", headers={"X-Test": "yes"}
    )
    await client.post("/v1/shape?table=todos&offset=-1", data=b'{"where": "true"}')
    await client.options("/v1/shape")
    await client.get("/v1/health")
    get, post, options, health = electric.requests
    assert get.method == "GET" and get.path == "/v1/shape"
    assert get.query_string == "table=todos&offset=-1&params%5B1%5D=a&x=1&x=2"
    assert get.query["params[1]"] == "a"
    assert get.query.getall("x") == ["1", "2"]
    assert get.headers["X-Test"] == "yes"
    assert post.body == b'{"where": "true"}'
    assert (options.method, health.path) == ("OPTIONS", "/v1/health")


async def test_held_and_cancelled_count_an_aborted_long_poll(
    client: Client, electric: FakeElectric
) -> None:
    handle, offset, _ = await sync_to_end(client, table="todos")
    request = asyncio.create_task(
        client.get(
            "/v1/shape",
            params={"table": "todos", "handle": handle, "offset": offset, "live": "true"},
        )
    )
    await electric.wait_until(lambda: electric.held == 1)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await electric.wait_until(lambda: electric.cancelled == 1)
    assert electric.held == 0


async def test_out_of_bounds_offset_is_refused_after_a_wait(
    client: Client, electric: FakeElectric
) -> None:
    handle, _, _ = await sync_to_end(client, table="todos")
    resp, body = await shape(client, table="todos", handle=handle, offset="99999999_0")
    assert resp.status == 400
    assert body == {
        "message": "Invalid request",
        "errors": {"offset": ["out of bounds for this shape"]},
    }


async def test_other_routes_and_stamps(client: Client) -> None:
    routes: list[tuple[Callable[..., Awaitable[ClientResponse]], str, int]] = [
        (client.delete, "/v1/shape", 405),
        (client.get, "/v1/health", 200),
        (client.get, "/v1/shape/", 404),
        (client.put, "/v1/shape", 404),
        (client.get, "/", 200),
    ]
    for method, path, status in routes:
        resp = await method(path)
        assert resp.status == status
        assert resp.headers["electric-server"] == "ElectricSQL/1.7.12-fake"
        assert len(resp.headers["x-request-id"]) >= 20
    assert await (await client.delete("/v1/shape")).json() == {"message": "DELETE not allowed"}
    assert await (await client.get("/v1/health")).json() == {"status": "active"}
    assert await (await client.get("/nope")).text() == "Not found"

    preflight = await client.options(
        "/v1/shape",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, if-none-match, traceparent",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert preflight.headers["access-control-allow-headers"] == "if-none-match,traceparent"
    assert preflight.headers["access-control-max-age"] == "86400"
    assert preflight.headers["access-control-allow-methods"] == "GET, POST, HEAD, DELETE, OPTIONS"

    head = await client.head("/v1/shape", params={"table": "todos", "offset": "-1"})
    assert head.status == 200
    assert "electric-handle" in head.headers
    assert await head.read() == b""


async def test_rotation_ends_an_sse_stream_silently(aiohttp_client: AiohttpClient) -> None:
    electric = make_electric(sse_timeout=5.0)
    client = await aiohttp_client(electric.app())
    handle, offset, _ = await sync_to_end(client, table="todos")
    query = {
        "table": "todos",
        "handle": handle,
        "offset": offset,
        "live": "true",
        "live_sse": "true",
    }
    resp = await client.get("/v1/shape", params=query)
    await electric.wait_until(lambda: electric.held == 1)
    electric.rotate("todos")
    async with asyncio.timeout(1):
        assert await resp.read() == b""
    again = await client.get("/v1/shape", params=query)
    assert again.status == 409
    assert again.headers["electric-handle"] == electric.handles("todos")[0]


async def test_changes_only_log_skips_the_snapshot(client: Client, electric: FakeElectric) -> None:
    handle, offset, messages = await sync_to_end(client, table="todos", log="changes_only")
    assert rows_of(messages) == []
    assert "snapshot-end" not in controls(messages)
    electric.insert("todos", {"id": 20, "org_id": "acme"})
    _, body = await shape(client, table="todos", log="changes_only", handle=handle, offset=offset)
    assert [m["value"]["id"] for m in body[:-1]] == ["20"]


async def test_subset_where_errors_are_nested(client: Client) -> None:
    resp = await client.get(
        "/v1/shape", params={"table": "todos", "offset": "-1", "subset__where": "colour = 'red'"}
    )
    assert resp.status == 400
    assert await resp.json() == {
        "message": "Invalid request",
        "errors": {"subset": {"where": ["At location 0: unknown reference colour"]}},
    }
