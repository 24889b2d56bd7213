"""Helpers for the rate-limit tests: callers, chains, live shapes, real redis-servers."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientResponse

from electric_proxy import Credentials, Middleware, ShapePolicy
from electric_proxy.testing import RunningUpstream, auth, two_users

SHAPE = "/v1/shape"


def chain(upstream: RunningUpstream, limiter: Middleware) -> list[Middleware]:
    """Bearer auth, then the limiter, then the claim-bound policy and the credentials."""
    return [
        two_users(),
        limiter,
        ShapePolicy(shapes={"todos": {"where": "org_id = :org_id"}}),
        Credentials(secret=upstream.secret),
    ]


@dataclass(frozen=True)
class LiveShape:
    """A caller's shape with one change after its snapshot: a live request at ``tail`` is
    held until the next change, one at ``"0_0"`` is answered at once (it is behind)."""

    client: Any
    headers: dict[str, str]
    handle: str
    tail: str

    def held_params(self, n: int) -> dict[str, str]:
        # Distinct cursors: identical long-polls would share one upstream request.
        return {"offset": self.tail, "handle": self.handle, "live": "true", "cursor": f"h{n}"}

    def hold(self, n: int) -> asyncio.Future[ClientResponse]:
        request: Awaitable[ClientResponse] = self.client.get(
            SHAPE, params=self.held_params(n), headers=self.headers
        )
        return asyncio.ensure_future(request)

    async def probe(self) -> ClientResponse:
        """A live request that is answered at once when admitted."""
        params = {"offset": "0_0", "handle": self.handle, "live": "true", "cursor": "probe"}
        resp: ClientResponse = await self.client.get(SHAPE, params=params, headers=self.headers)
        await resp.read()
        return resp

    async def admitted_within(self, seconds: float = 5.0) -> ClientResponse:
        """Probe until a probe is admitted (a Redis release is a round trip behind the end
        of its request); the last answer is returned either way."""
        deadline = time.monotonic() + seconds
        while True:
            resp = await self.probe()
            if resp.status != 429 or time.monotonic() > deadline:
                return resp
            await asyncio.sleep(0.02)


_NEXT_ID = iter(range(1000, 10**6))


def add_todo(upstream: RunningUpstream, org: str) -> None:
    """A change for ``org``'s shape: wakes its held long-polls."""
    upstream.electric.insert(
        "todos", {"id": next(_NEXT_ID), "org_id": org, "title": "new", "done": False}
    )


async def live_shape(client: Any, token: str, upstream: RunningUpstream, org: str) -> LiveShape:
    """Sync the shape, add a change, catch up: three requests (three tokens)."""
    headers = auth(token)
    first = await client.get(SHAPE, params={"offset": "-1"}, headers=headers)
    assert first.status == 200, await first.text()
    handle = first.headers["electric-handle"]
    add_todo(upstream, org)
    caught_up = await client.get(
        SHAPE,
        params={"offset": first.headers["electric-offset"], "handle": handle},
        headers=headers,
    )
    assert caught_up.status == 200, await caught_up.text()
    return LiveShape(client, headers, handle, caught_up.headers["electric-offset"])


async def finish(waiting: Sequence[asyncio.Future[ClientResponse]]) -> list[int]:
    statuses = []
    for resp in await asyncio.gather(*waiting):
        await resp.read()
        statuses.append(resp.status)
    return statuses


_prefixes = itertools.count(1)


def unique_prefix() -> str:
    """A Redis key prefix of its own: tests sharing one redis-server stay apart."""
    return f"rl-test-{next(_prefixes)}:"
