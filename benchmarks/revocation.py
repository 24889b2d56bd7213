"""Revoke many held long-polls at once: how long until every one is answered, and what is left.

    python benchmarks/revocation.py            # 1,000 held requests, 3 rounds
    python benchmarks/revocation.py --held 200 --rounds 5

One process, one event loop: the Electric stand-in (holding every long-poll for 60 s), the
proxy (bearer auth, the claim-bound policy, credentials), and the clients, all on loopback.
Each round syncs once, sends ``--held`` live requests with distinct cursors (so none share an
upstream request), waits until the proxy holds all of them, then times
``Revocations.interrupt(principal="alice")`` until every client has its 503. Reported per
round: the time to end them all, and before/after counts of asyncio tasks, upstream
connections in use (the proxy's connector) and open file descriptors. The clients live in
the same loop, so the time includes reading every answer. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from typing import Any

import aiohttp
from aiohttp import web

from electric_proxy import Credentials, Revocations, ShapePolicy, ShapeProxy, UpstreamSettings
from electric_proxy.server import raise_open_file_limit
from electric_proxy.standin import two_tenant_upstream
from electric_proxy.testing import ALICE, auth, eventually, live_params, serve_app, two_users

SECRET = "bench-revocation-secret-0123"


def _connections(app: web.Application, shape: ShapeProxy) -> int:
    session = app[shape.forwarder._session_key]
    connector: Any = session.connector
    return len(connector._acquired)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _round(held: int) -> dict[str, float]:
    electric = two_tenant_upstream(SECRET, long_poll_timeout=60.0)
    async with serve_app(electric.app()) as upstream_origin:
        shape = ShapeProxy(
            upstream=UpstreamSettings(
                url=upstream_origin + "/v1/shape", connection_limit=held + 10
            ),
            chain=[
                two_users(),
                ShapePolicy(shapes={"todos": {"where": "org_id = :org_id"}}),
                Credentials(secret=SECRET),
            ],
        )
        app = shape.app()
        revocations = Revocations([shape])
        async with (
            serve_app(app) as origin,
            # force_close: no keep-alive connection (and its server task) left to count
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True)
            ) as client,
        ):
            url = origin + "/v1/shape"
            first = await client.get(
                url, params={"offset": "-1", "table": "todos"}, headers=auth(ALICE)
            )
            await first.read()
            position = live_params(first.headers, table="todos")
            await asyncio.sleep(0.1)  # the first exchange's connection closes
            tasks_before = len(asyncio.all_tasks())
            conns_before = _connections(app, shape)
            fds_before = _fds()

            async def hold(n: int) -> int:
                async with client.get(
                    url, params={**position, "cursor": str(n)}, headers=auth(ALICE)
                ) as resp:
                    await resp.read()
                    return resp.status

            waiting = [asyncio.create_task(hold(n)) for n in range(held)]
            await eventually(
                lambda: shape.inflight.held["long_poll"] == held and electric.held == held,
                within=120,
                interval=0.05,
            )
            peak_tasks = len(asyncio.all_tasks())
            started = time.perf_counter()
            ended = revocations.interrupt(principal="alice")
            statuses = await asyncio.gather(*waiting)
            elapsed = time.perf_counter() - started
            assert ended == held and set(statuses) == {503}, (ended, set(statuses))
            with contextlib.suppress(AssertionError):  # reported, not asserted
                await eventually(
                    lambda: (
                        not electric.held
                        and _connections(app, shape) <= conns_before
                        and len(asyncio.all_tasks()) <= tasks_before
                        and _fds() <= fds_before
                    ),
                    within=10,
                    interval=0.05,
                )
            return {
                "ended": ended,
                "seconds": elapsed,
                "tasks_before": tasks_before,
                "tasks_peak": peak_tasks,
                "tasks_after": len(asyncio.all_tasks()),
                "upstream_connections_before": conns_before,
                "upstream_connections_after": _connections(app, shape),
                "upstream_still_held": electric.held,
                "fds_before": fds_before,
                "fds_after": _fds(),
            }


async def _main(held: int, rounds: int) -> None:
    results = []
    for index in range(rounds):
        result = await _round(held)
        results.append(result)
        print(
            f"round {index + 1}: "
            + ", ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
            )
        )
    times = [r["seconds"] for r in results]
    print(
        f"{held} held long-polls revoked at once: median {statistics.median(times) * 1000:.0f} ms "
        f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}) over {rounds} rounds"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raise_open_file_limit()  # four sockets per held request, all in this process
    asyncio.run(_main(args.held, args.rounds))


if __name__ == "__main__":
    main()
