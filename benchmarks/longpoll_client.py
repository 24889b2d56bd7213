"""Long-poll load: a burst of live requests, or identical waiting clients across changes.

Runs in its own process (pinned away from the proxy) and prints one JSON object.

The client is a bare ``asyncio.Protocol`` speaking HTTP/1.1 with ``Connection: close``, not
aiohttp's client: thousands of concurrent requests from one Python process must cost the
client as little as possible, or the client, not the proxy, would decide the numbers.

``burst``: ``--clients`` requests at once, each on its own offset (so no two are identical
and nothing is coalesced), each stamping its send time in ``cursor`` (wall-clock
microseconds, taken just before connecting); the upstream reads it back on arrival.

``coalesce``: ``--clients`` identical requests (same token, handle, offset and cursor, so
the upstream URL is identical) waiting on a live shape; the upstream is told about a change
``--changes`` times, each time once every client is waiting again; the upstream's request
counter then shows what each change cost it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import select
import socket
import statistics
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp


class Exchange(asyncio.Protocol):
    """One request, one response, read until the server closes the connection."""

    sent = 0  # requests written so far, by every exchange of this process
    all_sent: asyncio.Event | None = None  # set once ``sent`` reaches ``expected``
    expected = 0

    def __init__(self, request: bytes, done: asyncio.Future[bytes]) -> None:
        self.request = request
        self.chunks: list[bytes] = []
        self.done = done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)
        Exchange.sent += 1
        if Exchange.all_sent is not None and Exchange.sent >= Exchange.expected:
            Exchange.all_sent.set()

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if exc is not None and not self.chunks:
            self.done.set_exception(exc)
        else:
            self.done.set_result(b"".join(self.chunks))


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def parse(raw: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(status, headers, body)


@dataclass
class Target:
    host: str
    port: int
    path: str
    token: str
    #: Give every request its own W3C ``traceparent``, as traced browsers do.
    trace: bool = False
    sent: int = 0

    @classmethod
    def of(cls, url: str, token: str, trace: bool = False) -> Target:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        return cls(parts.hostname, parts.port, parts.path, token, trace)

    def request(self, query: str) -> bytes:
        self.sent += 1
        trace = f"traceparent: 00-{self.sent:032x}-{self.sent:016x}-01\r\n" if self.trace else ""
        return (
            f"GET {self.path}?{query} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\nAccept: */*\r\n{trace}"
            "Connection: close\r\n\r\n"
        ).encode()


async def fetch(target: Target, query: str, limit_s: float) -> Reply:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    transport, _ = await asyncio.wait_for(
        loop.create_connection(
            lambda: Exchange(target.request(query), done), target.host, target.port
        ),
        limit_s,
    )
    try:
        raw = await asyncio.wait_for(done, limit_s)
    finally:
        transport.abort()
    return parse(raw)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1]}


@dataclass
class Outcomes:
    ok: int = 0
    timeouts: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


@dataclass
class Pending:
    """One burst request on its non-blocking socket."""

    sock: socket.socket
    sent_at: float
    request: bytes
    chunks: list[bytes] = field(default_factory=list)


def burst(target: Target, clients: int, limit_s: float) -> dict[str, Any]:
    """``clients`` long-polls at once; each must come back 200 with an up-to-date message.

    Plain non-blocking sockets on one epoll, not asyncio: a transport, a protocol and a few
    futures per request made the client itself take seconds to open 9,000 connections on
    its shared core, and every one of those seconds would have been charged to the proxy.
    Each request's send time (taken just before ``connect``) goes out in its ``cursor``.
    """
    out = Outcomes()
    poller = select.epoll()
    pending: dict[int, Pending] = {}
    addr = (target.host, target.port)

    def finish(fd: int) -> Pending:
        item = pending.pop(fd)
        poller.unregister(fd)
        item.sock.close()
        return item

    def on_reply(fd: int) -> None:
        item = finish(fd)
        raw = b"".join(item.chunks)
        try:
            reply = parse(raw)
        except (ValueError, IndexError):
            out.count(out.errors, "BadResponse" if raw else "ConnectionClosed")
            return
        out.count(out.statuses, str(reply.status))
        if reply.status == 200 and b"up-to-date" in reply.body:
            out.ok += 1
            out.times.append(time.time() - item.sent_at)

    def poll(wait: float) -> None:
        for fd, events in poller.poll(wait):
            item = pending.get(fd)
            if item is None:
                continue
            if not item.chunks and events & select.EPOLLOUT:
                error = item.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    finish(fd)
                    out.count(out.errors, os.strerror(error))
                    continue
                item.sock.send(item.request)
                item.chunks.append(b"")  # marks "sent"; replies follow
                poller.modify(fd, select.EPOLLIN)
                continue
            while True:
                try:
                    data = item.sock.recv(65536)
                except BlockingIOError:
                    break
                except OSError as exc:
                    data = b""
                    if len(item.chunks) <= 1:
                        finish(fd)
                        out.count(out.errors, type(exc).__name__)
                        break
                if not data:
                    if fd in pending:
                        on_reply(fd)
                    break
                item.chunks.append(data)

    started = time.time()
    for index in range(clients):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sent_at = time.time()
        query = f"table=todos&handle=burst&offset={index}_0&live=true&cursor={int(sent_at * 1e6)}"
        pending[sock.fileno()] = Pending(sock, sent_at, target.request(query))
        sock.connect_ex(addr)
        poller.register(sock.fileno(), select.EPOLLOUT)
        if index % 256 == 255:
            poll(0)  # keep sending while connecting: a burst, not a queue behind the loop
    deadline = started + limit_s
    while pending and time.time() < deadline:
        poll(0.1)
        now = time.time()
        for fd in [fd for fd, item in pending.items() if now - item.sent_at > limit_s]:
            finish(fd)
            out.timeouts += 1
    for fd in list(pending):
        finish(fd)
        out.timeouts += 1
    poller.close()
    return {
        "mode": "burst",
        "clients": clients,
        "timeout_s": limit_s,
        "started": started,
        "wall_s": time.time() - started,
        "ok": out.ok,
        "timeouts": out.timeouts,
        "statuses": out.statuses,
        "errors": out.errors,
        "response_s": percentiles(out.times),
    }


async def wait_until_settled(session: aiohttp.ClientSession, control: str, sent: int) -> int:
    """Wait until every request is written and the upstream's held count stops growing.

    The proxy may still be reading the last requests when they are all written; a change
    announced before they joined would make them ask again, which the count would show.
    """
    Exchange.expected = sent
    Exchange.all_sent = asyncio.Event()
    if Exchange.sent >= sent:
        Exchange.all_sent.set()
    await Exchange.all_sent.wait()
    last, stable_since, deadline = -1, time.monotonic(), time.monotonic() + 10
    while time.monotonic() < deadline:
        async with session.get(f"{control}/stats") as resp:
            held = int((await resp.json())["held"])
        if held != last:
            last, stable_since = held, time.monotonic()
        elif held > 0 and time.monotonic() - stable_since >= 0.5:
            return held
        await asyncio.sleep(0.05)
    return last


async def coalesce(
    target: Target, control: str, clients: int, changes: int, limit_s: float
) -> dict[str, Any]:
    """Identical waiting clients; one change at a time once all of them wait again."""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{control}/reset"):
            pass
        async with session.get(f"{control}/stats") as resp:
            version = int((await resp.json())["version"])
        offset, cursor = f"{version}_0", str(1000 + version)
        rounds: list[dict[str, Any]] = []
        for _ in range(changes):
            query = f"table=todos&handle=co&offset={offset}&live=true&cursor={cursor}"
            tasks = [asyncio.create_task(fetch(target, query, limit_s)) for _ in range(clients)]
            held = await wait_until_settled(session, control, Exchange.sent + clients)
            async with session.get(f"{control}/stats") as resp:
                before = int((await resp.json())["shape_requests"])
            changed = time.time()
            async with session.post(f"{control}/change") as resp:
                await resp.read()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            replies = [r for r in results if isinstance(r, Reply)]
            good = [r for r in replies if r.status == 200 and r.headers.get("electric-has-data")]
            with_data = [r for r in good if r.headers["electric-has-data"] == "true"]
            fanout = time.time() - changed
            async with session.get(f"{control}/stats") as resp:
                after = int((await resp.json())["shape_requests"])
            rounds.append(
                {
                    "held_upstream": held,
                    "upstream_requests": after,
                    "upstream_requests_after_change": after - before,
                    "clients_answered": len(good),
                    "clients_with_data": len(with_data),
                    "failed": len(results) - len(good),
                    "fanout_s": fanout,
                }
            )
            if not with_data:
                break
            offset = with_data[0].headers["electric-offset"]
            cursor = with_data[0].headers["electric-cursor"]
        async with session.get(f"{control}/stats") as resp:
            total = int((await resp.json())["shape_requests"])
    return {
        "mode": "coalesce",
        "clients": clients,
        "changes": len(rounds),
        "upstream_requests": total,
        "upstream_requests_per_change": total / max(1, len(rounds)),
        "clients_answered": sum(r["clients_answered"] for r in rounds),
        "clients_with_data": sum(r["clients_with_data"] for r in rounds),
        "fanout_s_median": statistics.median(r["fanout_s"] for r in rounds) if rounds else None,
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["burst", "coalesce"])
    parser.add_argument("--url", required=True, help="the shape endpoint to load")
    parser.add_argument("--token", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per request")
    parser.add_argument("--control", help="the long-poll upstream's /_bench URL (coalesce)")
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--traceparent", action="store_true", help="a traceparent per request")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    target = Target.of(args.url, args.token, args.traceparent)
    if args.mode == "burst":
        result = burst(target, args.clients, args.timeout)
    else:
        assert args.control, "--control is required for coalesce"
        result = asyncio.run(
            coalesce(target, args.control, args.clients, args.changes, args.timeout)
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
