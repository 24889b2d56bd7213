"""Serve an aiohttp app on a real loopback port, for clients that are not aiohttp's own
(a browser, nginx, Node, a raw socket), and find free ports for servers started elsewhere."""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import AsyncIterator

from aiohttp import web

__all__ = ["free_port", "serve_app"]


@contextlib.asynccontextmanager
async def serve_app(app: web.Application | web.BaseRunner) -> AsyncIterator[str]:
    """Serve on 127.0.0.1, a free port; yield the origin (``http://127.0.0.1:<port>``).

    An application gets an ``AppRunner`` with handler cancellation on (as ``serve`` runs the
    proxy) and no access log; pass a runner of your own (``ProxyRunner``, other options) to
    serve it as it is. The runner is cleaned up on exit.
    """
    if isinstance(app, web.Application):
        runner: web.BaseRunner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    else:
        runner = app
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port(consecutive: int = 1) -> int:
    """A loopback port free now, with ``consecutive - 1`` free ports after it (one metrics
    port per worker); another process may still take it before it is bound.

    The port is chosen below the kernel's ephemeral range, where no client connection gets
    its local port: after a test of many short connections thousands of ephemeral ports wait
    in TIME-WAIT, and a server cannot bind one of those (not even with ``SO_REUSEADDR``,
    since the client sockets did not set it), so a run of consecutive free ports up there is
    rare. Each is probed as a server binds it, with ``SO_REUSEADDR``.
    """
    top = min(_ephemeral_start(), 65536) - consecutive
    for _ in range(200):
        port = random.randrange(10000, top)
        try:
            for offset in range(consecutive):
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return port
    raise RuntimeError("no free ports")
