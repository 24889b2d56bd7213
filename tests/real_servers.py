"""Servers the tests run as child processes: each in its own session, ended with its children.

The Durable Streams reference server (npm ``@durable-streams/server``, installed in
tests/streams by ``scripts/streams-setup``) serves the Streams conformance test and the
browser test of the streams route.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from electric_proxy.testing import unavailable

STREAMS_DIR = Path(__file__).resolve().parent / "streams"
STREAMS_NODE_MODULES = STREAMS_DIR / "node_modules"
VITEST = STREAMS_NODE_MODULES / ".bin" / "vitest"


async def stop_group(proc: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    """Terminate a process started in its own session, with everything it started."""
    if proc.returncode is None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                await asyncio.wait_for(proc.wait(), wait)
                break
            except TimeoutError:
                continue
    await proc.wait()


def streams_node() -> str:
    """The node binary; fails (in CI) or skips when it or tests/streams' pinned packages are
    missing."""
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed (Node >= 20); then run scripts/streams-setup")
    pinned = json.loads((STREAMS_DIR / "package.json").read_text())["dependencies"]
    for name, version in pinned.items():
        manifest = STREAMS_NODE_MODULES / name / "package.json"
        try:
            installed = json.loads(manifest.read_text())["version"]
        except (OSError, ValueError, KeyError):
            unavailable(f"npm package {name} is not installed: run scripts/streams-setup")
        if installed != version:
            unavailable(
                f"npm package {name} is {installed}, {version} is pinned: run scripts/streams-setup"
            )
    if not os.access(VITEST, os.X_OK):
        unavailable("tests/streams/node_modules/.bin/vitest is missing: run scripts/streams-setup")
    return node


@contextlib.asynccontextmanager
async def reference_streams_server(
    log: Path, *, service_prefix: str, service_secret: str, long_poll_timeout_ms: int = 3000
) -> AsyncIterator[str]:
    """The reference server on a free 127.0.0.1 port, its stderr in ``log``; yields its URL.

    Under ``service_prefix`` it demands ``Authorization: Bearer <service_secret>``, as an
    Electric Cloud streams service does (see reference-server.mjs).
    """
    node = streams_node()
    with log.open("wb") as stderr:  # a file: an unread pipe could fill and block the server
        proc = await asyncio.create_subprocess_exec(
            node,
            "reference-server.mjs",
            cwd=STREAMS_DIR,
            env={
                **os.environ,
                "LONG_POLL_TIMEOUT_MS": str(long_poll_timeout_ms),
                "SERVICE_PREFIX": service_prefix,
                "SERVICE_SECRET": service_secret,
            },
            stdin=asyncio.subprocess.PIPE,  # the server exits when this closes
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
    assert proc.stdout is not None
    try:
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            url: str = json.loads(line)["url"]
        except (TimeoutError, ValueError, KeyError):
            await stop_group(proc)
            output = await asyncio.to_thread(log.read_text, errors="replace")
            pytest.fail(f"the reference server did not start:\n{output}")
        yield url
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        await stop_group(proc)
