"""Run ``electric-proxy`` as a user does: in a subprocess of this interpreter."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping

__all__ = ["read_until", "run_cli", "start_cli"]

_COMMAND = (sys.executable, "-m", "electric_proxy.cli")


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    return {**os.environ, **(env or {})}


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``electric-proxy <args>`` to completion (``check-config``, ``plugins``): exit code,
    stdout and stderr as text. ``env`` is added to this process's environment."""
    return subprocess.run(
        [*_COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_environment(env),
        check=False,
    )


async def start_cli(*args: str, env: Mapping[str, str] | None = None) -> asyncio.subprocess.Process:
    """``electric-proxy <args>`` left running (``serve``, ``demo``), its stdout and stderr
    merged into one pipe; read it with :func:`read_until`, stop it with ``terminate()``."""
    return await asyncio.create_subprocess_exec(
        *_COMMAND,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=_environment(env),
    )


async def read_until(stream: asyncio.StreamReader, needle: str, within: float = 20) -> str:
    """The lines read until one contains ``needle`` (e.g. ``"Running on"``), all of them;
    fails if the process ends first or a line takes longer than ``within`` seconds."""
    seen = ""
    while needle not in seen:
        line = await asyncio.wait_for(stream.readline(), within)
        assert line, f"process ended before printing {needle!r}: {seen}"
        seen += line.decode()
    return seen
