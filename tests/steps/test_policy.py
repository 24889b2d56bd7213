"""Shape policies over HTTP: default deny, claim binding, client filters, subsets, POST bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import standard_chain

from electric_proxy import BearerAuth, ShapePolicy, StaticToken
from electric_proxy.testing import ALICE, BOB, RunningUpstream, auth


def rows(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["value"] for m in messages if "value" in m]


async def test_each_user_sees_only_their_org(shape_client: Any) -> None:
    for token, org in ((ALICE, "acme"), (BOB, "globex")):
        resp = await shape_client.get("/v1/shape?offset=-1", headers=auth(token))
        assert resp.status == 200
        found = rows(await resp.json())
        assert found and {r["org_id"] for r in found} == {org}


async def test_unknown_shape_is_denied(
    shape_client: Any, electric_upstream: RunningUpstream
) -> None:
    resp = await shape_client.get("/v1/shape?offset=-1&table=users", headers=auth(ALICE))
    assert resp.status == 403
    assert (await resp.json())["error"] == "shape_not_allowed"
    assert electric_upstream.electric.requests == []


async def test_missing_claim_is_403_not_an_empty_string(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    chain = standard_chain(electric_upstream)
    chain[0] = BearerAuth(tokens=[StaticToken(token="no-org-claim-token-1", sub="eve")])
    client = await proxy_client(chain)
    resp = await client.get("/v1/shape?offset=-1", headers=auth("no-org-claim-token-1"))
    assert resp.status == 403
    assert (await resp.json())["error"] == "missing_claim"
    assert electric_upstream.electric.requests == []


async def test_required_claims(proxy_client: Any, electric_upstream: RunningUpstream) -> None:
    client = await proxy_client(standard_chain(electric_upstream, require_claims={"sub": "bob"}))
    assert (await client.get("/v1/shape?offset=-1", headers=auth(ALICE))).status == 403
    assert (await client.get("/v1/shape?offset=-1", headers=auth(BOB))).status == 200


async def test_client_filter_refused_unless_allowed(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    client = await proxy_client(standard_chain(electric_upstream))
    resp = await client.get(
        "/v1/shape", params={"offset": "-1", "where": "done"}, headers=auth(ALICE)
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "filter_not_allowed"


async def test_client_filter_narrows_with_renumbered_params(
    shape_client: Any, electric_upstream: RunningUpstream
) -> None:
    resp = await shape_client.get(
        "/v1/shape",
        params={"offset": "-1", "where": "title LIKE $1", "params[1]": "Write%"},
        headers=auth(ALICE),
    )
    assert resp.status == 200
    assert [r["title"] for r in rows(await resp.json())] == ["Write the threat model"]
    sent = electric_upstream.electric.requests[-1].query
    assert sent["params[1]"] == "acme"
    assert sent["params[2]"] == "Write%"
    assert "$2" in sent["where"] and sent["where"].startswith("org_id = $1 AND")


async def test_client_cannot_aim_at_the_servers_param(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    client = await proxy_client(
        standard_chain(
            electric_upstream, client_where=True, filter_columns={"org_id": "text", "title": "text"}
        )
    )
    resp = await client.get(
        "/v1/shape",
        params={"offset": "-1", "where": "org_id = $1 OR true", "params[1]": "globex"},
        headers=auth(ALICE),
    )
    assert resp.status == 200
    assert {r["org_id"] for r in rows(await resp.json())} <= {"acme"}


@pytest.mark.parametrize(
    "where",
    [
        "true) OR (true",
        "1=1) OR (1=1",
        "done -- ",
        "done /* */ OR true",
        "title = $$($$) OR (1=1",
        "title = 'x",
        "done; DELETE FROM todos",
        "done UNION SELECT 1",
        "title IN (SELECT title FROM todos)",
        "pg_sleep(1) IS NULL",
        "now() IS NOT NULL",
        "org_id = 'globex'",
        "todos.title = 'x'",
        "x\x00 = 1",
        "NOT " * 200 + "done",
        "title = '" + "a" * 5000 + "'",
    ],
)
async def test_break_out_attempts_are_400_and_never_reach_electric(
    shape_client: Any, electric_upstream: RunningUpstream, where: str
) -> None:
    resp = await shape_client.get(
        "/v1/shape", params={"offset": "-1", "where": where}, headers=auth(ALICE)
    )
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "invalid_filter"
    assert body["field"] == "where" and body["reason"]
    assert electric_upstream.electric.requests == []


@pytest.mark.parametrize(
    "params",
    [
        {"params[2]": "x"},
        {"params[1]": "a", "params[3]": "c"},
        {"params[x]": "a"},
        {"params[99999999999999999999]": "a"},
        {"params[0]": "a"},
    ],
)
async def test_bad_client_params_are_400(
    shape_client: Any, electric_upstream: RunningUpstream, params: dict[str, str]
) -> None:
    resp = await shape_client.get(
        "/v1/shape",
        params={"offset": "-1", "where": "title = $1", **params},
        headers=auth(ALICE),
    )
    assert resp.status == 400
    assert electric_upstream.electric.requests == []


async def test_non_utf8_and_nul_bytes_in_a_filter(
    shape_client: Any, electric_upstream: RunningUpstream
) -> None:
    # aiohttp decodes invalid UTF-8 to U+FFFD: what remains is an ordinary, narrowing string.
    resp = await shape_client.get(
        "/v1/shape?offset=-1&where=title%20%3D%20%27%FF%27", headers=auth(ALICE)
    )
    assert resp.status == 200
    assert rows(await resp.json()) == []
    assert "\ufffd" in electric_upstream.electric.requests[-1].query["where"]
    nul = await shape_client.get(
        "/v1/shape?offset=-1&where=title%20%3D%20%27a%00%27", headers=auth(ALICE)
    )
    assert nul.status == 400
    assert (await nul.json())["error"] == "invalid_filter"
    assert len(electric_upstream.electric.requests) == 1


async def test_derived_shape_is_stable_across_requests(
    shape_client: Any, electric_upstream: RunningUpstream
) -> None:
    params = {"offset": "-1", "where": "done = $1", "params[1]": "false"}
    for _ in range(3):
        await shape_client.get("/v1/shape", params=params, headers=auth(BOB))
    sent = {r.query_string for r in electric_upstream.electric.requests}
    assert len(sent) == 1


async def test_subset_query_params_are_checked(
    shape_client: Any, electric_upstream: RunningUpstream
) -> None:
    ok = await shape_client.get(
        "/v1/shape",
        params={
            "offset": "-1",
            "subset__where": "title LIKE $1",
            "subset__params": json.dumps({"1": "Ship%"}),
            "subset__order_by": "title DESC",
            "subset__limit": "10",
        },
        headers=auth(ALICE),
    )
    assert ok.status == 200
    sent = electric_upstream.electric.requests[-1].query
    assert json.loads(sent["subset__params"]) == {"1": "Ship%"}
    assert sent["subset__limit"] == "10"
    bad = await shape_client.get(
        "/v1/shape",
        params={"offset": "-1", "subset__where": "org_id = 'globex'"},
        headers=auth(ALICE),
    )
    assert bad.status == 400
    assert (await bad.json())["field"] == "subset__where"


async def test_post_subset_body_is_rebuilt_not_forwarded(
    shape_client: Any, electric_upstream: RunningUpstream
) -> None:
    resp = await shape_client.post(
        "/v1/shape?offset=-1",
        json={
            "where": "done = $1",
            "params": {"1": "true"},
            "limit": 5,
            "order_by": "title",
            "where_expr": {"ignored": True},
        },
        headers=auth(ALICE),
    )
    assert resp.status == 200
    body = await resp.json()
    assert {m["value"]["org_id"] for m in body["data"]} == {"acme"}
    sent = electric_upstream.electric.requests[-1]
    assert json.loads(sent.body) == {
        "where": "done = $1",
        "params": {"1": "true"},
        "order_by": "title",
        "limit": 5,
    }
    assert sent.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    "body",
    [
        {"table": "users"},
        {"subset": {"where": "true"}},
        {"where": "true", "columns": "secret"},
        {"limit": "5"},
        {"limit": -1},
        {"params": {"1": 5}},
        [1, 2],
    ],
)
async def test_post_bodies_that_could_replace_the_shape_are_refused(
    shape_client: Any, electric_upstream: RunningUpstream, body: Any
) -> None:
    resp = await shape_client.post("/v1/shape?offset=-1", json=body, headers=auth(ALICE))
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_body"
    assert electric_upstream.electric.requests == []


async def test_post_body_size_is_bounded(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    chain = standard_chain(electric_upstream, client_where=True)
    chain[1] = ShapePolicy(shapes=chain[1].shapes, max_body_size=2048)
    client = await proxy_client(chain)
    resp = await client.post(
        "/v1/shape?offset=-1",
        data=b"{" + b" " * 5000 + b"}",
        headers={**auth(ALICE), "Content-Type": "application/json"},
    )
    assert resp.status == 413


async def test_subset_paging_passes_only_where_subsets_are_allowed(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    closed = await proxy_client(standard_chain(electric_upstream, subsets=False))
    resp = await closed.get("/v1/shape?offset=-1&subset__limit=5", headers=auth(ALICE))
    assert resp.status == 403
    assert (await resp.json())["error"] == "subsets_not_allowed"
    resp = await closed.get("/v1/shape?offset=-1&subset__offset=5", headers=auth(ALICE))
    assert resp.status == 403

    open_ = await proxy_client(standard_chain(electric_upstream))
    seen = len(electric_upstream.electric.requests)
    for bad in ("subset__limit=0", "subset__limit=-1", "subset__offset=x", "subset__limit=1e3"):
        resp = await open_.get(f"/v1/shape?offset=-1&{bad}", headers=auth(ALICE))
        assert resp.status == 400, bad
    assert len(electric_upstream.electric.requests) == seen
    resp = await open_.get(
        "/v1/shape?offset=-1&subset__limit=007&subset__offset=0", headers=auth(ALICE)
    )
    sent = electric_upstream.electric.requests[-1].query
    assert (sent["subset__limit"], sent["subset__offset"]) == ("7", "0")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"where": "title LIKE 'Plan\\'"}, "where"),
        ({"where": "title ILIKE $1", "params[1]": "Plan\\"}, "params"),
        ({"where": "title NOT LIKE $1 OR title = $2", "params[1]": "x", "params[2]": "y"}, None),
        (
            {"where": "like(title, $2) AND done = $1", "params[1]": "f", "params[2]": "a\\"},
            "params",
        ),
        ({"where": "title LIKE ANY(ARRAY['x', $1])", "params[1]": "P\\\\\\"}, "params"),
        ({"subset__where": "title LIKE $1", "subset__params": '{"1": "P\\\\"}'}, "subset__params"),
    ],
)
async def test_like_patterns_ending_in_the_escape_character_are_400(
    shape_client: Any, electric_upstream: RunningUpstream, query: dict[str, str], field: str | None
) -> None:
    """Such a pattern raises only on rows that reach it: an oracle on other tenants' titles."""
    resp = await shape_client.get("/v1/shape", params={"offset": "-1", **query}, headers=auth(BOB))
    if field is None:
        assert resp.status == 200
        return
    assert resp.status == 400
    body = await resp.json()
    assert (body["error"], body["field"]) == ("invalid_filter", field)
    assert "escape character" in body["reason"]
    assert electric_upstream.electric.requests == []


async def test_untyped_columns_only_take_null_tests_unless_leakproof_is_off(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    strict = await proxy_client(
        standard_chain(electric_upstream, client_where=True, filter_columns=["title"])
    )
    ok = await strict.get(
        "/v1/shape", params={"offset": "-1", "where": "title IS NOT NULL"}, headers=auth(BOB)
    )
    assert ok.status == 200
    refused = await strict.get(
        "/v1/shape", params={"offset": "-1", "where": "title = 'x'"}, headers=auth(BOB)
    )
    assert refused.status == 400
    assert 'filter_columns = { title = "text" }' in (await refused.json())["reason"]
    lax = await proxy_client(
        standard_chain(
            electric_upstream, client_where=True, filter_columns=["title"], leakproof=False
        )
    )
    anything = {"offset": "-1", "where": "lower(title) LIKE $1", "params[1]": "plan\\"}
    assert (await lax.get("/v1/shape", params=anything, headers=auth(BOB))).status == 200


def test_filter_column_types_are_checked_when_the_config_loads() -> None:
    from pydantic import ValidationError

    from electric_proxy import ShapeRule

    rule = ShapeRule(filter_columns={"n": "bigint", "tags": "text []"})
    assert rule.filter_columns == {"n": "int8", "tags": "text[]"}
    with pytest.raises(ValidationError, match="unknown column type 'money'"):
        ShapeRule(filter_columns={"n": "money"})
