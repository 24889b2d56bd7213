"""Helpers for the rate-limit tests: callers, chains, live shapes, real redis-servers."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse

from electric_proxy import Credentials, Middleware, ShapePolicy
from electric_proxy.testing import RunningUpstream, auth, two_users, unavailable

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


# -- redis-server ---------------------------------------------------------------------------


def require_redis_server() -> str:
    """The redis-server binary; fails under CI (which must run these tests), skips elsewhere."""
    found = shutil.which("redis-server")
    if found is None:
        message = (
            "redis-server is not installed: run `bash scripts/redis-setup` (Debian's package) "
            "to run the Redis backend tests"
        )
        unavailable(message)
    return found


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


@dataclass
class RedisServer:
    """A redis-server of the test's own on a loopback port, without persistence."""

    binary: str
    directory: Path
    port: int
    password: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        login = f":{self.password}@" if self.password else ""
        return f"redis://{login}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        if self.password:
            args += ["--requirepass", self.password]
        log = (self.directory / f"redis-{self.port}.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while not _answers_ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                output = (self.directory / f"redis-{self.port}.log").read_text()[-2000:]
                pytest.fail(f"redis-server did not start on port {self.port}:\n{output}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
