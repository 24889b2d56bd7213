"""Live revocation across two proxy processes sharing one Redis, with the real client in Node.

Two replicas of an app embedding the proxy (``replica_app.py``, each its own OS process) stand
in front of one fake Electric (served by this process) and share one private redis-server:
as their session store (``session:<token>``, read on every request) and as the channel of
their ``Revocations``. Alice's ``@electric-sql/client`` (``revoke_client.mjs``) syncs through
replica B; the test calls replica A's admin endpoint, which publishes the interrupt, and B
ends her held request. First with her session unchanged, a few times: the client recovers by
itself and keeps syncing, and the latency from the admin call to the end of the old request,
as the client saw it, is measured. Then her organisation is removed from her session and A
is called again: her re-request to B is a 403, the client reports it through ``onError`` and
stops, and rows inserted afterwards never reach it (no request of hers reaches Electric).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from e2e_support import (
    ARTIFACTS,
    SECRET,
    NodeProcess,
    assert_revoked,
    node_process,
    python_process,
    require_prerequisites,
    serving_database,
)

from electric_proxy.testing import ALICE, RedisServer, free_port

pytestmark = pytest.mark.timeout(90)

ROUNDS = 3
ADMIN_TOKEN = "e2e-admin-token-5d8e1c7a9b"


@dataclass
class Replica:
    """One ``replica_app.py`` process: its shape endpoint, its admin endpoint, its counters."""

    process: NodeProcess
    origin: str
    admin_url: str
    http: ClientSession

    @property
    def shape_url(self) -> str:
        return self.origin + "/v1/shape"

    async def state(self) -> dict[str, Any]:
        async with self.http.get(self.origin + "/replica/state") as resp:
            assert resp.status == 200
            state: dict[str, Any] = await resp.json()
            return state

    async def interrupt(self, **criteria: Any) -> dict[str, Any]:
        """``POST /admin/interrupt``; its answer, ``{"ended": n, "replicas": r}``."""
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with self.http.post(self.admin_url, json=criteria, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            answer: dict[str, Any] = await resp.json()
            return answer


@contextlib.asynccontextmanager
async def running_replica(
    upstream: str, redis_url: str, http: ClientSession
) -> AsyncIterator[Replica]:
    """Start a replica and return once it serves and is subscribed to the revocation channel."""
    port, admin_port = free_port(), free_port()
    args = ["--port", str(port), "--admin-port", str(admin_port)]
    args += ["--upstream", upstream + "/v1/shape", "--redis-url", redis_url]
    env = {"E2E_UPSTREAM_SECRET": SECRET, "E2E_ADMIN_TOKEN": ADMIN_TOKEN}
    async with python_process("replica_app.py", args, env) as process:
        await process.event("ready", within=30)
        running = Replica(
            process,
            f"http://127.0.0.1:{port}",
            f"http://127.0.0.1:{admin_port}/admin/interrupt",
            http,
        )
        await until(lambda: subscribed(running), within=30, what="subscribed", about=running)
        yield running


async def subscribed(replica: Replica) -> bool:
    return bool((await replica.state())["subscribed"])


async def until(
    condition: Callable[[], Awaitable[bool]],
    *,
    within: float = 15.0,
    what: str,
    about: Replica | None = None,
) -> None:
    """``eventually`` for a condition that must be asked over the network."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await condition():
        if loop.time() >= deadline:
            detail = "\n" + about.process.diagnostics() if about is not None else ""
            raise AssertionError(f"not {what} within {within} s{detail}")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_revoking_alice_on_one_replica_stops_her_rows_on_another(
    live: str, tmp_path: Path
) -> None:
    node = require_prerequisites()
    async with contextlib.AsyncExitStack() as stack:
        redis_server = stack.enter_context(RedisServer(tmp_path))
        from redis.asyncio import Redis  # the redis package is there: RedisServer checked

        sessions = Redis.from_url(redis_server.url, decode_responses=True)
        stack.push_async_callback(sessions.aclose)
        alice_session = f"session:{ALICE}"
        await sessions.hset(alice_session, mapping={"sub": "alice", "org_id": "acme"})
        db, upstream = await stack.enter_async_context(serving_database(long_poll_timeout=30.0))
        electric = db.electric
        http = await stack.enter_async_context(ClientSession())
        a = await stack.enter_async_context(running_replica(upstream, redis_server.url, http))
        b = await stack.enter_async_context(running_replica(upstream, redis_server.url, http))
        env = {
            "E2E_PROXY_URL": b.shape_url,
            "E2E_TOKEN": ALICE,
            "E2E_LIVE_SSE": "1" if live == "sse" else "0",
        }
        client = await stack.enter_async_context(node_process(node, "revoke_client.mjs", env))

        async def b_holds_alice() -> bool:
            return electric.held >= 1 and (await b.state())["held"] >= 1

        async def held(interrupted: int) -> None:
            # B cancels the upstream request of each one it ends: once those are gone,
            # Electric's count is of her current request, which must have reached it.
            await electric.wait_until(lambda: electric.cancelled >= interrupted, within=15)
            await until(b_holds_alice, what="Alice's live request held on B", about=b)

        await client.event("synced")
        latencies: list[float] = []
        calls: list[float] = []
        for _ in range(ROUNDS):
            await held(len(latencies))
            if live == "sse":
                # A connection under 1 s counts as "short" to the client, and three make it
                # fall back to long-polls: let each stream live past that first.
                await asyncio.sleep(1.1)
            await client.send(cmd="mark")
            await client.event("marked")
            started = time.time() * 1000
            assert await a.interrupt(principal="alice") == {"ended": 0, "replicas": 1}
            calls.append(time.time() * 1000 - started)
            await client.send(cmd="ended")
            ended = await client.event("ended")
            latencies.append(ended["at"] - started)
            if live == "long-poll":
                # A success resets the client's doubling backoff (see test_node_revocation).
                await held(len(latencies))
                sent = len(electric.requests)
                db.insert({"id": 300 + len(latencies), "org_id": "acme"})
                await electric.wait_until(lambda n=sent: len(electric.requests) > n, within=15)

        # Revocation: Alice leaves acme in the shared session store; A is told to interrupt.
        await held(ROUNDS)
        await sessions.hdel(alice_session, "org_id")
        upstream_before = len(electric.requests)
        revoked = time.time() * 1000
        assert await a.interrupt(principal="alice") == {"ended": 0, "replicas": 1}
        await client.send(cmd="error")
        error = await client.event("error")
        assert error["status"] == 403
        # Rows committed after the revocation: the client has stopped, nothing of hers
        # reaches Electric any more, so they cannot arrive.
        db.insert({"id": 900, "org_id": "acme", "title": "after", "done": False})
        db.insert({"id": 901, "org_id": "acme", "title": "later", "done": True})
        await client.send(cmd="finish")
        done: dict[str, Any] = await client.event("done")
        assert await client.close() == 0
        state_a, state_b = await a.state(), await b.state()
        # B closed the upstream request of her last held one too.
        await electric.wait_until(lambda: electric.cancelled == ROUNDS + 1, within=15)

    assert_revoked(done, live, ROUNDS)
    assert len(electric.requests) == upstream_before  # the interrupted one was already sent
    # Every interrupt reached B through Redis and ended her request there; A held nothing.
    assert state_b["received"] == state_b["interrupted"] == ROUNDS + 1
    assert state_a["received"] == state_a["interrupted"] == 0
    for replica in (a, b):  # and neither logged an error, shutdown included
        assert "Traceback" not in "\n".join(replica.process.stderr), replica.process.diagnostics()
    report = {
        "live": live,
        "replicas": 2,
        "admin_call_to_end_ms": [round(x, 1) for x in latencies],
        "median_ms": round(statistics.median(latencies), 1),
        # The admin call's own round trip (A ends its own, publishes, answers).
        "admin_call_ms": [round(x, 1) for x in calls],
        # Includes the client's backoff before it re-requests (see test_node_revocation).
        "admin_call_to_on_error_ms": round(error["at"] - revoked, 1),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"revocation-latency-replicas-{live}.json").write_text(json.dumps(report))
    print(json.dumps(report))
