"""The real ``@electric-sql/client`` in Node syncs a shape through the proxy, end to end.

``node_client.mjs`` runs a ``ShapeStream`` + ``Shape`` with Alice's bearer token against the
proxy (bearer auth, the claim-bound ``todos`` policy, secret injection) in front of the fake
Electric, on real sockets. This side plays the database and checks, at each step, that the
client holds exactly acme's rows: initial sync in several chunks, a live update that arrives
while the request is held, another tenant's row that never arrives, a 409 must-refetch the
client recovers from, a catch-up of changes made while it was away, and gzip bodies. A
protocol break in the proxy (a step that drops ``electric-cursor``) makes the script fail.
The happy path runs twice: live updates by long-poll, and by Server-Sent Events.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_support import (
    ClientFailed,
    DropResponseHeader,
    NodeProcess,
    Stack,
    by_id,
    node_process,
    require_prerequisites,
    running_stack,
    standard_chain,
)

from electric_proxy.testing import ALICE

pytestmark = pytest.mark.timeout(60)

TENANT = "acme"
OTHER = "globex"
# With chunk_rows=2, acme's 7 rows make a 4-chunk initial sync; globex gets rows too.
EXTRA_ROWS = [
    *({"id": i, "org_id": TENANT, "title": f"acme {i}", "done": i % 2 == 0} for i in range(5, 10)),
    *({"id": i, "org_id": OTHER, "title": f"globex {i}", "done": False} for i in range(10, 13)),
]


def client_env(stack: Stack, *, sse: bool = False) -> dict[str, str]:
    return {
        "E2E_PROXY_URL": stack.shape_url,
        "E2E_TOKEN": ALICE,
        "E2E_TENANT": TENANT,
        "E2E_STEP_TIMEOUT_MS": "10000",
        "E2E_LIVE_SSE": "1" if sse else "0",
    }


async def wait_held(stack: Stack) -> None:
    """Until the client's live request (long-poll or SSE stream) is held at the upstream."""
    await stack.electric.wait_until(lambda: stack.electric.held >= 1, within=10)


async def run_scenario(stack: Stack, client: NodeProcess) -> dict[str, Any]:
    """Drive the client through every step; returns its ``done`` event."""
    db = stack.db

    # Initial sync: exactly acme's rows, in several chunks, then up-to-date.
    synced = await client.event("synced")
    assert by_id(synced["rows"]) == db.visible(TENANT)
    initial = [r for r in synced["responses"] if "live" not in r["params"]]
    assert len(initial) >= 4, initial
    assert initial[0]["params"]["offset"] == "-1"
    assert initial[-1]["upToDate"]

    # Live: the held request is woken by acme's new row; globex's (committed first) never
    # arrives, here or later (the script fails on any change message of another tenant).
    await wait_held(stack)
    db.insert({"id": 201, "org_id": OTHER, "title": "globex secret plan", "done": False})
    db.insert({"id": 200, "org_id": TENANT, "title": "arrives live", "done": False})
    await client.send(cmd="wait", step="live", rows=db.visible(TENANT))
    live = await client.event("reached")
    assert 200 in {row["id"] for row in live["rows"]}

    # 409 must-refetch: the shape gets a new handle while the client is held; it refetches
    # from scratch and ends up with the current rows under the new handle.
    await wait_held(stack)
    stack.electric.rotate("todos")
    db.insert({"id": 202, "org_id": TENANT, "title": "after rotation", "done": True})
    await client.send(cmd="wait", step="must-refetch", rows=db.visible(TENANT), expect_409=True)
    refetched = await client.event("reached")
    assert refetched["handle"] != refetched["handleBefore"]
    assert refetched["handle"] == stack.electric.handles("todos")[-1]

    # Catch-up: changes made while the client is away arrive through non-live requests
    # from the offset it stopped at.
    await client.send(cmd="pause")
    paused = await client.event("paused")
    # The client went away mid long-poll: the proxy must let go of the upstream request too.
    await stack.electric.wait_until(lambda: stack.electric.held == 0, within=10)
    db.update({"id": 1, "title": "renamed while away"})
    db.delete(2)
    db.insert({"id": 203, "org_id": TENANT, "title": "added while away", "done": False})
    db.insert({"id": 204, "org_id": OTHER, "title": "globex while away", "done": False})
    await client.send(cmd="resume", step="catch-up", rows=db.visible(TENANT))
    caught_up = await client.event("reached")
    catch_up = caught_up["catchUp"]
    assert catch_up, "no catch-up request"
    assert catch_up[0]["params"]["offset"] == paused["offset"]
    assert catch_up[0]["params"]["handle"] == paused["handle"]
    assert catch_up[-1]["upToDate"]

    await client.send(cmd="finish")
    return await client.event("done")


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_real_client_syncs_through_the_proxy(live: str) -> None:
    node = require_prerequisites()
    async with (
        running_stack(chain=standard_chain(), extra_rows=EXTRA_ROWS) as stack,
        node_process(node, "node_client.mjs", client_env(stack, sse=live == "sse")) as client,
    ):
        done = await run_scenario(stack, client)
        assert await client.close() == 0

    responses = done["responses"]
    assert done["foreign"] == 0
    # Every step really happened on the wire, as the client saw it ...
    assert any(r["status"] == 409 for r in responses)
    live_responses = [
        r for r in responses if r["params"].get("live") == "true" and r["status"] == 200
    ]
    assert live_responses and all(r["cursor"] for r in live_responses)
    assert all((r["params"].get("live_sse") == "true") == (live == "sse") for r in live_responses)
    # ... and the client decoded gzip bodies: the rows it reported came in them.
    assert any(r["contentEncoding"] == "gzip" and r["status"] == 200 for r in responses)

    # The proxy sent gzip bytes through untouched, as the client asked.
    gets = stack.shape_exchanges("GET")
    assert all("gzip" in e.request_headers.get("Accept-Encoding", "") for e in gets)
    assert any(e.headers.get("Content-Encoding") == "gzip" for e in gets if e.status == 200)

    # Upstream saw only acme's server-decided shape, with the secret, never the token.
    requests = [r for r in stack.electric.requests if r.path == "/v1/shape"]
    assert requests
    for request in requests:
        assert request.query["params[1]"] == TENANT
        assert request.query["where"] == "org_id = $1"
        assert request.query["secret"]
        assert "Authorization" not in request.headers
        assert "gzip" in request.headers.get("Accept-Encoding", "")
    statuses = [e.status for e in gets]
    assert 409 in statuses
    assert set(statuses) <= {200, 409}, statuses


async def test_the_client_fails_when_the_proxy_drops_electric_cursor() -> None:
    """The same scenario against a proxy that drops ``electric-cursor`` must fail: the test
    above would catch such a break, and the script reports it rather than hanging."""
    node = require_prerequisites()
    chain = standard_chain(front=[DropResponseHeader("electric-cursor")])
    async with (
        running_stack(chain=chain, extra_rows=EXTRA_ROWS) as stack,
        node_process(node, "node_client.mjs", client_env(stack)) as client,
    ):
        with pytest.raises(ClientFailed) as failure:
            await run_scenario(stack, client)

    event = failure.value.event
    assert event is not None and event["event"] == "failed", failure.value
    assert failure.value.returncode == 1
    assert event["reason"] == "the client reported an error"
    assert "electric-cursor" in event["message"], event
    # It failed on the first live request, the only kind that must carry the header.
    last = event["responses"][-1]
    assert last["params"].get("live") == "true" and last["cursor"] is None
    assert "synced" in [e["event"] for e in client.events]
