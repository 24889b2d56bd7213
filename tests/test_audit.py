"""The decision audit log: one JSON record per decision, holding no secret, token or value."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from electric_proxy import Audit, Credentials, ShapePolicy, ShapeProxy, parse_config
from electric_proxy.audit import AUDIT_LOGGER, shape_hash
from electric_proxy.testing import ALICE, BOB, RunningUpstream, auth, two_users

FILTER_VALUE = "needle-filter-value-7731%"
CLAIM_VALUES = ("acme", "globex")


def config(**audit: Any) -> dict[str, Any]:
    return {
        "audit": {"enabled": True, **audit},
        "chain": [
            {"use": "request_id"},
            {
                "use": "bearer",
                "tokens": [
                    {"token": ALICE, "sub": "alice", "claims": {"org_id": "acme"}},
                    {"token": BOB, "sub": "bob", "claims": {"org_id": "globex"}},
                ],
            },
            {
                "use": "policy",
                "shapes": {
                    "todos": {
                        "where": "org_id = :org_id",
                        "columns": ["id", "org_id", "title", "done"],
                        "client_where": True,
                        "filter_columns": {"title": "text"},
                    }
                },
            },
        ],
    }


def records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == AUDIT_LOGGER]


async def send_mix(client: Any) -> None:
    filtered = {"table": "todos", "offset": "-1", "where": "title LIKE $1"}
    assert (
        await client.get(
            "/v1/shape", params={**filtered, "params[1]": FILTER_VALUE}, headers=auth(ALICE)
        )
    ).status == 200
    assert (
        await client.get("/v1/shape", params={"table": "todos", "offset": "-1"}, headers=auth(BOB))
    ).status == 200
    assert (
        await client.get(
            "/v1/shape", params={"table": "users", "offset": "-1"}, headers=auth(ALICE)
        )
    ).status == 403
    bad_filter = {"table": "todos", "offset": "-1", "where": f"org_id = '{FILTER_VALUE}'"}
    assert (await client.get("/v1/shape", params=bad_filter, headers=auth(ALICE))).status == 400
    assert (
        await client.get("/v1/shape?offset=-1", headers=auth("token-nobody-000000000000"))
    ).status == 401


async def test_one_record_per_decision(
    config_client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    client = await config_client(config())
    await send_mix(client)
    allowed, other_tenant, not_allowed, bad_filter, unknown = records(caplog)

    assert allowed["decision"] == "allowed"
    assert (allowed["principal"], allowed["route"], allowed["shape"]) == (
        "alice",
        "/v1/shape",
        "todos",
    )
    assert (allowed["status"], allowed["upstream_status"], allowed["method"]) == (200, 200, "GET")
    assert len(allowed["request_id"]) >= 20
    assert allowed["time"].endswith("Z")
    assert "step" not in allowed and "code" not in allowed

    sent = electric_upstream.electric.requests[0].query
    assert (
        allowed["shape_hash"]
        == hashlib.sha256(
            json.dumps(
                {
                    "table": "todos",
                    "columns": sent["columns"],
                    "where": sent["where"],
                    "params": [sent["params[1]"], sent["params[2]"]],
                },
                sort_keys=True,
                separators=(",", ":"),
            ).encode()
        ).hexdigest()
    )
    assert other_tenant["shape_hash"] not in (None, allowed["shape_hash"])

    assert not_allowed | {"time": 0, "request_id": 0} == {
        "time": 0,
        "request_id": 0,
        "principal": "alice",
        "route": "/v1/shape",
        "method": "GET",
        "shape": "users",
        "shape_hash": None,
        "decision": "refused",
        "status": 403,
        "step": "ShapePolicy",
        "code": "shape_not_allowed",
    }
    assert (bad_filter["decision"], bad_filter["code"]) == ("refused", "invalid_filter")
    assert (unknown["principal"], unknown["step"], unknown["code"]) == (
        None,
        "BearerAuth",
        "invalid_token",
    )


async def test_no_record_holds_a_secret_token_claim_or_filter_value(
    config_client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    client = await config_client(config())
    await send_mix(client)
    lines = [r.getMessage() for r in caplog.records if r.name == AUDIT_LOGGER]
    assert len(lines) == 5
    forbidden = (electric_upstream.secret, ALICE, BOB, *CLAIM_VALUES, "needle-filter-value")
    for line in lines:
        for value in forbidden:
            assert value not in line


async def test_off_by_default(config_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    raw = config()
    del raw["audit"]
    assert parse_config({**raw, "upstream": {"url": "http://127.0.0.1:1"}}).audit.enabled is False
    client = await config_client(raw)
    await client.get("/v1/shape?table=todos&offset=-1", headers=auth(ALICE))
    assert records(caplog) == []


async def test_a_file_gets_json_lines_only(
    config_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    client = await config_client(config(file=str(path)))
    await send_mix(client)
    await client.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["decision"] for line in lines] == ["allowed"] * 2 + ["refused"] * 3
    assert records(caplog) == []  # the file has them; the console does not repeat them
    logger = logging.getLogger(AUDIT_LOGGER)
    assert logger.handlers == [] and logger.propagate


async def test_an_audit_observer_in_code(
    aiohttp_client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    audit = Audit(clock=lambda: "2026-01-01T00:00:00.000Z")
    chain = [
        two_users(),
        ShapePolicy(shapes={"todos": {"where": "org_id = :org_id"}}),
        Credentials(secret=electric_upstream.secret),
    ]
    proxy = ShapeProxy(upstream=electric_upstream.url, chain=chain, observers=[audit])
    client = await aiohttp_client(proxy.app())
    assert (await client.get("/v1/shape?offset=-1", headers=auth(BOB))).status == 200
    (record,) = records(caplog)
    assert record["time"] == "2026-01-01T00:00:00.000Z"
    assert (record["principal"], record["shape"], record["request_id"]) == ("bob", None, None)


def test_shape_hash_is_independent_of_order_and_needs_a_table() -> None:
    one = {"table": "t", "where": "a = $1", "params[1]": "x", "columns": "id"}
    other = dict(reversed(list(one.items())))
    assert shape_hash(one) == shape_hash(other)
    assert shape_hash({**one, "params[1]": "y"}) != shape_hash(one)
    assert shape_hash({"offset": "-1"}) is None
