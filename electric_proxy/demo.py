"""``electric-proxy demo``: the whole product on one machine, no Electric and no network.

A built-in upstream (the same one the tests use) holds a ``todos`` table shared by two
organisations; the proxy, built from an ordinary config through the registry, lets each
of two users see only their own organisation's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import signal
from typing import Any

from aiohttp import web

from .config import parse_config
from .http_server import ProxyRunner
from .server import raise_open_file_limit
from .standin import TENANT_ROWS, two_tenant_upstream

__all__ = ["DEMO_TOKENS", "demo_config", "run_demo"]

DEMO_TOKENS = {"alice": "demo-token-alice-acme", "bob": "demo-token-bob-globex"}


def demo_config(upstream_url: str, secret: str) -> dict[str, Any]:
    """The demo's config, as a ``proxy.toml`` would hold it (secret inline only here)."""
    return {
        "upstream": {"url": upstream_url},
        "chain": [
            {
                "use": "bearer",
                "tokens": [
                    {"token": DEMO_TOKENS["alice"], "sub": "alice", "claims": {"org_id": "acme"}},
                    {"token": DEMO_TOKENS["bob"], "sub": "bob", "claims": {"org_id": "globex"}},
                ],
            },
            {
                "use": "policy",
                "shapes": {
                    "todos": {
                        "columns": ["id", "org_id", "title", "done"],
                        "where": "org_id = :org_id",
                        "client_where": True,
                        "filter_columns": {"title": "text", "done": "bool"},
                    }
                },
            },
            {"use": "credentials", "secret": secret},
        ],
    }


def _instructions(base: str) -> str:
    alice, bob = DEMO_TOKENS["alice"], DEMO_TOKENS["bob"]
    return f"""
electric-proxy demo is running: proxy {base}, in front of a built-in Electric stand-in.

Alice (org acme) sees only acme's todos:
  curl -s -H 'Authorization: Bearer {alice}' '{base}?offset=-1'

Bob (org globex) asks for the same shape and sees only globex's:
  curl -s -H 'Authorization: Bearer {bob}' '{base}?offset=-1'

Bob adds his own filter; it narrows his rows and can never widen them:
  curl -s -G -H 'Authorization: Bearer {bob}' '{base}' --data-urlencode 'offset=-1' \\
       --data-urlencode "where=title ILIKE '%launch%'"

A break-out attempt is refused before anything reaches Electric (400):
  curl -s -G -H 'Authorization: Bearer {bob}' '{base}' --data-urlencode 'offset=-1' \\
       --data-urlencode 'where=true) OR (true'

No token: 401. The headers show what the client needs (-i):
  curl -si '{base}?offset=-1'

A new todo is added every 10 s, alternating orgs; follow it live with the handle and
offset from the response headers (electric-handle, electric-offset):
  curl -s -H 'Authorization: Bearer {alice}' '{base}?offset=<offset>&handle=<handle>&live=true'

Ctrl-C stops the demo.
"""


async def _serve(host: str, port: int) -> None:
    secret = secrets.token_urlsafe(24)
    upstream = two_tenant_upstream(secret)
    up_runner = web.AppRunner(upstream.app(), handler_cancellation=True, access_log=None)
    await up_runner.setup()
    up_site = web.TCPSite(up_runner, "127.0.0.1", 0)
    await up_site.start()
    up_port = up_runner.addresses[0][1]

    config = parse_config(demo_config(f"http://127.0.0.1:{up_port}/v1/shape", secret))
    runner = ProxyRunner(config.build().app(), **config.server.run_app_options())
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound = runner.addresses[0][1]
    print(_instructions(f"http://{host}:{bound}{config.server.path}"), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for n in itertools.count(len(TENANT_ROWS) + 1):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 10)
            if stop.is_set():
                break
            org = "acme" if n % 2 else "globex"
            upstream.insert("todos", {"id": n, "org_id": org, "title": f"Todo #{n}", "done": False})
    finally:
        await runner.cleanup()
        await up_runner.cleanup()


def run_demo(*, host: str = "127.0.0.1", port: int = 8080) -> int:
    raise_open_file_limit()
    asyncio.run(_serve(host, port))
    return 0
