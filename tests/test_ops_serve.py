"""`electric-proxy serve` as operators run it: SIGTERM, access log, metrics per worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from electric_proxy.testing import eventually, free_port, read_until, start_cli

SECRET = "ops-secret-value-0123456789"
TOKEN = "ops-token-alice-0123456789"
ELECTRIC_HEADERS = {
    "electric-handle": "h-1",
    "electric-offset": "0_0",
    "electric-schema": '{"id":{"type":"int8"}}',
    "electric-cursor": "1",
}


@dataclass
class Upstream:
    """An Electric stand-in with a slow catch-up, a long-poll and an SSE stream that hold."""

    events: dict[str, float] = field(default_factory=dict)
    catch_up_delay: float = 1.5

    def mark(self, name: str) -> None:
        self.events[name] = asyncio.get_running_loop().time()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/shape", self.shape)
        app.router.add_get("/v1/health", self.health)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "active"})

    async def shape(self, request: web.Request) -> web.StreamResponse:
        assert request.query.get("secret") == SECRET
        if request.query.get("live") != "true":
            self.mark("catch_up started")
            await asyncio.sleep(self.catch_up_delay)
            self.mark("catch_up answered")
            return web.json_response(
                [{"headers": {"control": "up-to-date"}}], headers=ELECTRIC_HEADERS
            )
        kind = "sse" if request.query.get("live_sse") == "true" else "long_poll"
        try:
            if kind == "sse":
                resp = web.StreamResponse(
                    headers={**ELECTRIC_HEADERS, "Content-Type": "text/event-stream"}
                )
                await resp.prepare(request)
                await resp.write(b'data: {"headers":{"control":"up-to-date"}}\n\n')
            self.mark(f"{kind} held")
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.mark(f"{kind} closed")
            raise
        raise AssertionError("unreachable")


@dataclass
class Proxy:
    proc: asyncio.subprocess.Process
    url: str
    output: str = ""


@contextlib.asynccontextmanager
async def serve(
    tmp_path: Path, config: str, *args: str, wait_for: str = "Running on", times: int = 1
) -> AsyncIterator[Proxy]:
    path = tmp_path / "proxy.toml"
    path.write_text(config)
    env = {"ELECTRIC_SECRET": SECRET, "ALICE_TOKEN": TOKEN}
    proc = await start_cli("serve", "--config", str(path), *args, env=env)
    assert proc.stdout is not None
    port = next(line for line in config.splitlines() if line.startswith("port = "))[7:]
    proxy = Proxy(proc, f"http://127.0.0.1:{port}")
    try:
        for _ in range(times):
            proxy.output += await read_until(proc.stdout, wait_for)
        yield proxy
    finally:
        if proc.returncode is None:
            proc.terminate()
        rest = (await asyncio.wait_for(proc.communicate(), 20))[0].decode()
        proxy.output += rest


CHAIN = """
[[chain]]
use = "bearer"
tokens = [{ token = { "$env" = "ALICE_TOKEN" }, sub = "alice", claims = { org_id = "acme" } }]
[[chain]]
use = "credentials"
secret = { "$env" = "ELECTRIC_SECRET" }
"""


async def test_sigterm_drains_held_requests_and_finishes_catch_ups(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    upstream = Upstream()
    server = await aiohttp_server(upstream.app(), access_log=None)
    port = free_port()
    config = (
        f'[server]\nport = {port}\nshutdown_timeout = 5\naccess_log = "json"\n'
        f'[upstream]\nurl = "{server.make_url("/v1/shape")}"\n{CHAIN}'
    )
    headers = {"Authorization": f"Bearer {TOKEN}"}
    position = {"handle": "h-1", "offset": "0_0", "live": "true", "secret": "client-guess"}
    async with serve(tmp_path, config) as proxy, aiohttp.ClientSession() as session:
        shape = f"{proxy.url}/v1/shape"
        long_poll = asyncio.create_task(session.get(shape, params=position, headers=headers))
        sse = await session.get(
            shape,
            params={**position, "live_sse": "true"},
            headers={**headers, "Accept": "text/event-stream"},
        )
        assert sse.status == 200
        first_event = await asyncio.wait_for(sse.content.readuntil(b"\n\n"), 5)
        catch_up = asyncio.create_task(session.get(shape, params={"offset": "-1"}, headers=headers))
        expected = {"long_poll held", "sse held", "catch_up started"}
        await eventually(lambda: expected <= upstream.events.keys(), within=5.0)

        loop = asyncio.get_running_loop()
        proxy.proc.send_signal(signal.SIGTERM)
        sigterm = loop.time()

        # The held long-poll is answered at once, retryably, before the catch-up is done.
        answer = await asyncio.wait_for(long_poll, 2)
        assert answer.status == 503
        assert answer.headers["Retry-After"] == "0"
        assert (await answer.json())["error"] == "shutting_down"
        assert loop.time() - sigterm < 1.0
        assert "catch_up answered" not in upstream.events
        # The listener is closed: new clients go to another instance.
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{proxy.url}/healthz")

        # The SSE stream ends cleanly (a cut connection would raise here).
        rest = await asyncio.wait_for(sse.read(), 2)
        assert first_event.startswith(b"data:") and rest == b""

        # The in-flight catch-up completes.
        done = await asyncio.wait_for(catch_up, 5)
        assert done.status == 200
        assert (await done.json()) == [{"headers": {"control": "up-to-date"}}]

        code = await asyncio.wait_for(proxy.proc.wait(), 5)
        assert code == 0
        assert loop.time() - sigterm < 5.0

    # Electric saw the held requests' connections closed right away.
    for kind in ("long_poll", "sse"):
        assert upstream.events[f"{kind} closed"] - sigterm < 1.0, upstream.events
    assert upstream.events["catch_up answered"] > upstream.events["long_poll closed"]

    # The access log: one JSON line per request, no secret, no token (and every line JSON).
    entries = [json.loads(line) for line in proxy.output.splitlines()]
    lines = [entry for entry in entries if entry["logger"] == "electric_proxy.access"]
    statuses = sorted(entry["status"] for entry in lines)
    assert statuses == [200, 200, 503], proxy.output
    assert all(entry["principal"] == "alice" for entry in lines)
    assert {entry["upstream_status"] for entry in lines} == {200, None}
    assert any(entry["query"].endswith("secret=***") for entry in lines)
    for leak in (SECRET, TOKEN, "client-guess"):
        assert leak not in proxy.output


async def test_workers_serve_metrics_each_on_its_own_port(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    upstream = Upstream(catch_up_delay=0)
    server = await aiohttp_server(upstream.app(), access_log=None)
    port, metrics_port = free_port(), free_port(consecutive=2)
    config = (
        f"[server]\nport = {port}\n"
        f'[upstream]\nurl = "{server.make_url("/v1/shape")}"\n{CHAIN}'
        f"[metrics]\nport = {metrics_port}\n"
    )
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        serve(tmp_path, config, "--workers", "2", wait_for="metrics on", times=2) as proxy,
        aiohttp.ClientSession() as session,
    ):
        for _ in range(20):
            # A fresh connection each time, so the kernel can pick either worker.
            async with session.get(
                f"{proxy.url}/v1/shape",
                params={"offset": "-1"},
                headers={**headers, "Connection": "close"},
            ) as resp:
                assert resp.status == 200
        async with session.get(f"{proxy.url}/readyz") as resp:
            assert resp.status == 200
        total = 0.0
        for worker in range(2):
            async with session.get(f"http://127.0.0.1:{metrics_port + worker}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            for line in text.splitlines():
                if line.startswith('electric_proxy_requests_total{method="GET",route="/v1/shape"'):
                    total += float(line.rsplit(" ", 1)[1])
        assert total == 20
    assert proxy.proc.returncode == 0, proxy.output
    # Text access lines from both workers, with the principal and without the token.
    access = [line for line in proxy.output.splitlines() if '"GET /v1/shape?offset=-1" 200' in line]
    assert len(access) == 20
    assert all("principal=alice upstream=200" in line for line in access)
    assert SECRET not in proxy.output and TOKEN not in proxy.output


async def test_workers_refuse_metrics_on_the_shared_port(tmp_path: Path) -> None:
    port = free_port()
    config = (
        f"[server]\nport = {port}\n"
        '[upstream]\nurl = "http://127.0.0.1:9/v1/shape"\n'
        '[metrics]\nmain_path = "/metrics"\n'
    )
    path = tmp_path / "proxy.toml"
    path.write_text(config)
    proc = await start_cli("serve", "--config", str(path), "--workers", "2")
    output = (await asyncio.wait_for(proc.communicate(), 20))[0].decode()
    assert proc.returncode == 1
    assert "metrics.main_path: cannot be used with --workers" in output


async def worker_counts(
    session: aiohttp.ClientSession, metrics_port: int, workers: int
) -> list[int]:
    """Shape requests each worker counted, read from its own metrics listener."""
    counts = []
    for worker in range(workers):
        async with session.get(f"http://127.0.0.1:{metrics_port + worker}/metrics") as resp:
            text = await resp.text()
        counts.append(
            sum(
                int(float(line.rsplit(" ", 1)[1]))
                for line in text.splitlines()
                if line.startswith('electric_proxy_requests_total{method="GET",route="/v1/shape"')
            )
        )
    return counts


async def test_workers_share_new_connections(tmp_path: Path, aiohttp_server: Any) -> None:
    """200 requests, each on a new connection, to 4 workers: more than one worker serves.

    Every worker listens on its own ``SO_REUSEPORT`` socket and the kernel hashes each
    connection (by its source port) to one of them. The exact spread is the kernel's; the
    spread is printed (``-s``) for the README, only "more than one" is asserted.
    """
    upstream = Upstream(catch_up_delay=0)
    server = await aiohttp_server(upstream.app(), access_log=None)
    workers, requests = 4, 200
    port, metrics_port = free_port(), free_port(consecutive=workers)
    config = (
        f'[server]\nport = {port}\naccess_log = "off"\n'
        f'[upstream]\nurl = "{server.make_url("/v1/shape")}"\n{CHAIN}'
        f"[metrics]\nport = {metrics_port}\n"
    )
    headers = {"Authorization": f"Bearer {TOKEN}", "Connection": "close"}
    async with (
        serve(
            tmp_path, config, "--workers", str(workers), wait_for="metrics on", times=workers
        ) as proxy,
        aiohttp.ClientSession() as session,
    ):
        for _ in range(requests):
            async with session.get(
                f"{proxy.url}/v1/shape", params={"offset": "-1"}, headers=headers
            ) as resp:
                assert resp.status == 200
        counts = await worker_counts(session, metrics_port, workers)
    print(f"requests per worker over {requests} new connections: {counts}")
    assert sum(counts) == requests
    assert sum(1 for count in counts if count) > 1, counts
    assert proxy.proc.returncode == 0, proxy.output


async def not_ready(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """Poll ``/readyz`` until it says 503 (a signal arrives asynchronously); its body."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        async with session.get(f"{url}/readyz") as resp:
            if resp.status == 503:
                body: dict[str, Any] = await resp.json()
                return body
        assert loop.time() < deadline, "still ready 10 s after SIGTERM"
        await asyncio.sleep(0.02)


def drain_config(port: int, upstream: str, drain_delay: float) -> str:
    return (
        f"[server]\nport = {port}\ndrain_delay = {drain_delay}\n"
        f'[upstream]\nurl = "{upstream}"\n{CHAIN}'
    )


async def test_drain_delay_reports_unready_and_keeps_serving(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    """``drain_delay``: after SIGTERM ``/readyz`` is 503 while requests are still served and
    a held long-poll keeps waiting. A second SIGTERM cuts the delay short: the proxy drains
    as without one (the long-poll gets its retryable 503) and exits 0."""
    upstream = Upstream(catch_up_delay=0)
    server = await aiohttp_server(upstream.app(), access_log=None)
    config = drain_config(free_port(), str(server.make_url("/v1/shape")), 300)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    position = {"handle": "h-1", "offset": "0_0", "live": "true"}
    async with serve(tmp_path, config) as proxy, aiohttp.ClientSession() as session:
        shape = f"{proxy.url}/v1/shape"
        assert (await session.get(f"{proxy.url}/readyz")).status == 200
        long_poll = asyncio.create_task(session.get(shape, params=position, headers=headers))
        await eventually(lambda: "long_poll held" in upstream.events, within=5.0)

        proxy.proc.send_signal(signal.SIGTERM)
        body = await not_ready(session, proxy.url)
        assert body == {"status": "unavailable", "checks": {"process": "shutting down"}}
        # Still serving: new requests are answered, the held one keeps waiting.
        async with session.get(shape, params={"offset": "-1"}, headers=headers) as resp:
            assert resp.status == 200
        async with session.get(f"{proxy.url}/healthz") as resp:
            assert resp.status == 200
        assert not long_poll.done()
        assert "long_poll closed" not in upstream.events

        proxy.proc.send_signal(signal.SIGTERM)
        answer = await asyncio.wait_for(long_poll, 20)
        assert answer.status == 503
        assert (await answer.json())["error"] == "shutting_down"
        assert await asyncio.wait_for(proxy.proc.wait(), 20) == 0
    assert "SIGTERM: not ready; serving 300 s more, then stopping" in proxy.output


async def test_drain_delay_ends_by_itself(tmp_path: Path, aiohttp_server: Any) -> None:
    """Once ``drain_delay`` is over the proxy stops on its own, held requests answered."""
    upstream = Upstream(catch_up_delay=0)
    server = await aiohttp_server(upstream.app(), access_log=None)
    config = drain_config(free_port(), str(server.make_url("/v1/shape")), 0.5)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    position = {"handle": "h-1", "offset": "0_0", "live": "true"}
    async with serve(tmp_path, config) as proxy, aiohttp.ClientSession() as session:
        long_poll = asyncio.create_task(
            session.get(f"{proxy.url}/v1/shape", params=position, headers=headers)
        )
        await eventually(lambda: "long_poll held" in upstream.events, within=5.0)
        proxy.proc.send_signal(signal.SIGTERM)
        answer = await asyncio.wait_for(long_poll, 20)
        assert answer.status == 503
        assert await asyncio.wait_for(proxy.proc.wait(), 20) == 0
