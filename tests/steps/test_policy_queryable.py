"""The policy sends ``queryable_columns``, so Electric enforces the rule's column list too.

Defence in depth for GHSA-c82q-v86f-c87f: should the proxy's own filter check ever let a
subset through, Electric still refuses a filter, an order or a projection on a column the
rule never named. The stand-in enforces the list as Electric does (tests/standin).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from conftest import standard_chain

from electric_proxy import UPSTREAM, Handler, ShapeRule
from electric_proxy.testing import ALICE, RunningUpstream, auth


def test_primary_key_columns_and_filter_names_quoted_like_columns() -> None:
    rule = ShapeRule(
        columns=("title", "Due Date"),
        primary_key=("org_id", "id"),
        filter_columns={"done": "bool", "title": "text"},
    )
    assert rule.upstream_columns() == 'org_id,id,title,"Due Date"'
    assert rule.queryable_columns() == 'org_id,id,title,"Due Date",done'


def test_no_list_without_an_explicit_projection() -> None:
    # Electric syncs only the queryable columns when `columns` is absent: sending the filter
    # columns alone would silently drop every other column from the rows.
    assert ShapeRule(filter_columns=("title",)).queryable_columns() is None
    assert ShapeRule().queryable_columns() is None


async def test_subsets_on_filter_columns_pass_electrics_own_check(
    shape_client: Any, electric_upstream: RunningUpstream
) -> None:
    resp = await shape_client.get(
        "/v1/shape",
        params={
            "offset": "-1",
            "subset__where": "title = $1",
            "subset__params": '{"1": "Ship the proxy"}',
            "subset__order_by": "done",
            "subset__limit": "5",
        },
        headers=auth(ALICE),
    )
    assert resp.status == 200
    assert [m["value"]["id"] for m in (await resp.json())["data"]] == ["1"]
    sent = electric_upstream.electric.requests[-1].query
    assert sent["queryable_columns"] == "id,org_id,title,done"


async def test_electric_refuses_what_the_rule_left_out(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    async def buggy_step(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Stands for a hole in the proxy's own check: a subset on a column the rule excludes.
        request[UPSTREAM].query["subset__where"] = "org_id = 'globex'"
        return await handler(request)

    chain = standard_chain(electric_upstream, columns=["id", "title"], client_where=True)
    chain.insert(2, buggy_step)
    client = await proxy_client(chain)
    resp = await client.get("/v1/shape", params={"offset": "-1"}, headers=auth(ALICE))
    assert resp.status == 400
    assert "globex" not in await resp.text()
    sent = electric_upstream.electric.requests[-1].query
    assert sent["queryable_columns"] == "id,title"
