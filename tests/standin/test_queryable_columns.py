"""The stand-in honours ``queryable_columns`` as Electric 1.6.10+ does (GHSA-c82q-v86f-c87f).

Electric's allow-list bounds what a client-controlled request may touch: subset ``where``
and ``order_by``, and the ``columns`` projection (which defaults to it). It does not bound
the main ``where``, which is the server's own. The proxy now sends it, so the stand-in must
enforce it with Electric's wording, or the proxy's tests would pass against a laxer upstream.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from electric_proxy.standin import Column, FakeElectric

Client = TestClient[Any, Any]

COLUMNS = [
    Column("id", "int8", primary_key=True, not_null=True),
    Column("org_id", "text", not_null=True),
    Column("title", "text"),
    Column("salary", "int4"),
]
ROWS = [
    {"id": 1, "org_id": "acme", "title": "Ship", "salary": 100},
    {"id": 2, "org_id": "acme", "title": "Docs", "salary": 900},
]


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    electric = FakeElectric(long_poll_timeout=0.5)
    electric.add_table("staff", COLUMNS, ROWS)
    return await aiohttp_client(electric.app())


def _values(body: Any) -> list[dict[str, Any]]:
    messages = body["data"] if isinstance(body, dict) else body
    return [m["value"] for m in messages if "value" in m]


async def test_without_columns_the_projection_is_the_queryable_columns(client: Client) -> None:
    resp = await client.get(
        "/v1/shape", params={"table": "staff", "offset": "-1", "queryable_columns": "title,id"}
    )
    assert resp.status == 200
    assert _values(await resp.json())[0] == {"id": "1", "title": "Ship"}


async def test_the_main_where_is_not_restricted(client: Client) -> None:
    resp = await client.get(
        "/v1/shape",
        params={
            "table": "staff",
            "offset": "-1",
            "columns": "id,title",
            "queryable_columns": "id,title",
            "where": "salary > 500",
        },
    )
    assert resp.status == 200
    assert _values(await resp.json()) == [{"id": "2", "title": "Docs"}]


async def test_quoted_names_and_a_json_body_list_are_read_like_columns(client: Client) -> None:
    quoted = await client.get(
        "/v1/shape",
        params={"table": "staff", "offset": "-1", "queryable_columns": '"id",TITLE'},
    )
    assert quoted.status == 200
    assert _values(await quoted.json())[0] == {"id": "1", "title": "Ship"}
    # A body's list holds names as they are (Electric's `ColumnList` casts a list unparsed).
    listed = await client.post(
        "/v1/shape",
        params={"table": "staff", "offset": "-1"},
        json={"queryable_columns": ["id", "title"], "subset": {"where": "title = 'Docs'"}},
    )
    assert listed.status == 200
    assert _values(await listed.json()) == [{"id": "2", "title": "Docs"}]


async def test_subsets_may_filter_and_order_on_queryable_columns(client: Client) -> None:
    resp = await client.get(
        "/v1/shape",
        params={
            "table": "staff",
            "offset": "-1",
            "queryable_columns": "id,org_id,title",
            "columns": "id,title",
            "subset__where": "org_id = $1",
            "subset__params": json.dumps({"1": "acme"}),
            "subset__order_by": "title",
            "subset__limit": "1",
        },
    )
    assert resp.status == 200
    assert _values(await resp.json()) == [{"id": "2", "title": "Docs"}]


@pytest.mark.parametrize(
    ("query", "errors"),
    [
        (
            {"queryable_columns": "title"},
            {
                "queryable_columns": [
                    "The list of queryable columns must include all primary key columns, "
                    "missing: id"
                ]
            },
        ),
        (
            {"queryable_columns": "id,colour"},
            {
                "queryable_columns": [
                    "The following queryable columns are not found on the table: colour"
                ]
            },
        ),
        (
            {"queryable_columns": "id,title", "columns": "id,salary"},
            {"columns": ["The following columns are not found on the table: salary"]},
        ),
        (
            {"queryable_columns": "id,title", "subset__where": "salary > 500"},
            {"subset": {"where": ["At location 0: unknown reference salary"]}},
        ),
    ],
)
async def test_what_is_not_queryable_is_a_400_in_electrics_words(
    client: Client, query: dict[str, str], errors: dict[str, Any]
) -> None:
    resp = await client.get("/v1/shape", params={"table": "staff", "offset": "-1", **query})
    assert resp.status == 400
    assert await resp.json() == {"message": "Invalid request", "errors": errors}


async def test_ordering_by_a_column_not_queryable_is_as_if_it_did_not_exist(
    client: Client,
) -> None:
    async def order_by(column: str, queryable: str) -> Any:
        resp = await client.get(
            "/v1/shape",
            params={
                "table": "staff",
                "offset": "-1",
                "queryable_columns": queryable,
                "subset__order_by": f"{column} DESC",
                "subset__limit": "1",
            },
        )
        return resp.status, (await resp.json())

    status, _ = await order_by("salary", "id,title,salary")
    assert status == 200
    status, hidden = await order_by("salary", "id,title")
    assert status == 400
    _, unknown = await order_by("colour", "id")
    assert hidden["errors"]["subset"]["order_by"] == [
        message.replace("colour", "salary") for message in unknown["errors"]["subset"]["order_by"]
    ]
