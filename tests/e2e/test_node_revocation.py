"""Live revocation with the real ``@electric-sql/client`` in Node (``revoke_client.mjs``).

Alice syncs through the proxy (a callback ``BearerAuth`` reading claims the test edits, the
claim-bound ``todos`` policy, secret injection) in front of the fake Electric. First her held
request is interrupted several times with her claims unchanged: each time the client
recovers by itself (a 503 retried, or a new SSE connection), keeps syncing, and the latency from
``interrupt()`` to the end of the old request, as the client saw it, is measured. Then her
organisation is taken away and her request interrupted: the re-request is a 403, the client
reports it through ``onError`` and stops, and rows inserted afterwards never reach it (no
request of hers reaches Electric again).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import pytest
from aiohttp import web
from e2e_support import (
    ARTIFACTS,
    COLUMNS,
    SECRET,
    assert_revoked,
    node_process,
    require_prerequisites,
    running_stack,
)

from electric_proxy import BearerAuth, Credentials, Principal, Revocations, ShapePolicy
from electric_proxy.testing import ALICE, eventually

pytestmark = pytest.mark.timeout(90)

ROUNDS = 5


class Claims:
    """The app's session store: the callback reads it on every request."""

    def __init__(self) -> None:
        self.alice = Principal("alice", {"sub": "alice", "org_id": "acme"})

    async def __call__(self, request: web.Request) -> Principal | None:
        if request.headers.get("Authorization") == f"Bearer {ALICE}":
            return self.alice
        return None


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_revoking_alice_mid_sync_stops_her_rows(live: str) -> None:
    node = require_prerequisites()
    claims = Claims()
    chain = [
        BearerAuth(callback=claims),
        ShapePolicy(shapes={"todos": {"where": "org_id = :org_id", "columns": COLUMNS}}),
        Credentials(secret=SECRET),
    ]
    async with running_stack(chain=chain, long_poll_timeout=30.0) as stack:
        proxy = stack.proxy
        assert proxy is not None
        revocations = Revocations([proxy])
        env = {
            "E2E_PROXY_URL": stack.shape_url,
            "E2E_TOKEN": ALICE,
            "E2E_LIVE_SSE": "1" if live == "sse" else "0",
        }
        electric = stack.electric

        def held() -> bool:
            # The proxy cancels the upstream request of each one it ends: once those are
            # gone, Electric's count is of her current request, which must have reached it.
            return (
                electric.cancelled >= proxy.inflight.interrupted
                and sum(proxy.inflight.held.values()) >= 1
                and electric.held >= 1
            )

        async with node_process(node, "revoke_client.mjs", env) as client:
            await client.event("synced")
            latencies = []
            for _ in range(ROUNDS):
                await eventually(held, within=15)
                if live == "sse":
                    # A connection under 1 s counts as "short" to the client, and three make
                    # it fall back to long-polls: let each stream live past that first.
                    await asyncio.sleep(1.1)
                await client.send(cmd="mark")
                await client.event("marked")
                started = time.time() * 1000
                assert revocations.interrupt(principal="alice") == 1
                await client.send(cmd="ended")
                ended = await client.event("ended")
                latencies.append(ended["at"] - started)
                if live == "long-poll":
                    # The client retries a 503 within one fetch with a doubling backoff (1 s,
                    # 2 s, ... 32 s) that only a success resets; a change answers its
                    # retried long-poll, as it would in a real app between revocations.
                    await eventually(held, within=15)
                    sent = len(electric.requests)
                    electric.insert("todos", {"id": 300 + len(latencies), "org_id": "acme"})
                    await eventually(lambda n=sent: len(electric.requests) > n, within=15)

            # Revocation: Alice leaves acme; her held request is interrupted.
            await eventually(held, within=15)
            claims.alice = Principal("alice", {"sub": "alice"})
            upstream_before = len(electric.requests)
            revoked = time.time() * 1000
            assert revocations.interrupt(principal="alice") == 1
            await client.send(cmd="error")
            error = await client.event("error")
            assert error["status"] == 403
            # Rows committed after the revocation: the client has stopped, nothing of hers
            # reaches Electric any more, so they cannot arrive.
            electric.insert("todos", {"id": 900, "org_id": "acme", "title": "after", "done": False})
            electric.insert("todos", {"id": 901, "org_id": "acme", "title": "later", "done": True})
            await client.send(cmd="finish")
            done: dict[str, Any] = await client.event("done")
            assert await client.close() == 0

    assert_revoked(done, live, ROUNDS)
    assert len(electric.requests) == upstream_before  # the interrupted one was already sent
    report = {
        "live": live,
        "interrupt_to_end_ms": [round(x, 1) for x in latencies],
        "median_ms": round(statistics.median(latencies), 1),
        # Includes the client's backoff before it re-requests (a 503 is retried after
        # random(0, 1 s); an SSE stream's end is followed at once).
        "interrupt_to_on_error_ms": round(error["at"] - revoked, 1),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"revocation-latency-{live}.json").write_text(json.dumps(report))
    print(json.dumps(report))
