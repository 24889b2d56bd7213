"""The electric-proxy command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from electric_proxy.demo import DEMO_TOKENS
from electric_proxy.testing import free_port, read_until, run_cli, start_cli

SECRET = "cli-secret-value-abcdef"


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(body)
    return path


def test_check_config_ok_and_masked(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        (
            '[upstream]\nurl = "http://localhost:3000/v1/shape"\n'
            '[[chain]]\nuse = "credentials"\nsecret = { "$env" = "ELECTRIC_SECRET" }\n'
        ),
    )
    result = run_cli("check-config", str(path), "--show", env={"ELECTRIC_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    assert "ok; /v1/shape chain: credentials" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_check_config_bad_exits_1_naming_the_option(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        (
            '[upstream]\nurl = "http://localhost:3000/v1/shape"\n'
            '[[chain]]\nuse = "policy"\n[chain.shapes.todos]\nreplica = "sometimes"\n'
        ),
    )
    result = run_cli("check-config", str(path))
    assert result.returncode == 1
    assert "chain[0] (policy).shapes.todos.replica" in result.stderr


def test_plugins_lists_builtins_with_their_distribution() -> None:
    result = run_cli("plugins")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "DISTRIBUTION", "VERSION", "OBJECT"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    for name in ("bearer", "credentials", "policy"):
        assert rows[name][1] == "electric-proxy"
        assert re.fullmatch(r"\d+\.\d+\.\d+.*", rows[name][2])


async def test_demo_shows_each_user_only_their_org() -> None:
    proc = await start_cli("demo", "--port", "0")
    assert proc.stdout is not None
    try:
        text = await read_until(proc.stdout, "Ctrl-C stops the demo")
        base = re.search(r"proxy (http://\S+),", text)
        assert base, text
        async with aiohttp.ClientSession() as session:
            for user, org in (("alice", "acme"), ("bob", "globex")):
                headers = {"Authorization": f"Bearer {DEMO_TOKENS[user]}"}
                async with session.get(base[1], params={"offset": "-1"}, headers=headers) as r:
                    assert r.status == 200
                    orgs = {m["value"]["org_id"] for m in await r.json() if "value" in m}
                assert orgs == {org}
            async with session.get(base[1], params={"offset": "-1"}) as r:
                assert r.status == 401
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == 0


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    stdout: asyncio.StreamReader
    url: str
    output: str = ""


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path,
    chain: str,
    *args: str,
    env: dict[str, str] | None = None,
    server: str = "",
) -> AsyncIterator[Served]:
    """`electric-proxy serve` on a free port in front of a live upstream, stopped by SIGTERM."""
    from electric_proxy.standin import two_tenant_upstream

    upstream = two_tenant_upstream(SECRET)
    base = await upstream.start()
    port = free_port()
    config = f'[server]\nport = {port}\n{server}[upstream]\nurl = "{base}/v1/shape"\n{chain}'
    proc = await start_cli("serve", "--config", str(write_config(tmp_path, config)), *args, env=env)
    assert proc.stdout is not None
    served = Served(proc, proc.stdout, f"http://127.0.0.1:{port}/v1/shape")
    try:
        yield served
    finally:
        proc.terminate()
        served.output = (await asyncio.wait_for(proc.communicate(), 20))[0].decode()
        await upstream.stop()


async def test_serve_runs_a_config_until_sigterm(tmp_path: Path) -> None:
    chain = (
        '[[chain]]\nuse = "bearer"\n'
        'tokens = [{ token = { "$env" = "ALICE" }, sub = "alice", claims = { org_id = "acme" } }]\n'
        '[[chain]]\nuse = "policy"\nshapes.todos.where = "org_id = :org_id"\n'
        '[[chain]]\nuse = "credentials"\nsecret = { "$env" = "ELECTRIC_SECRET" }\n'
    )
    env = {"ALICE": "alice-token-0123456789", "ELECTRIC_SECRET": SECRET}
    # uvloop: the test extra installs it, and its path through serve is the one less trodden.
    async with serving(tmp_path, chain, env=env, server='event_loop = "uvloop"\n') as served:
        await read_until(served.stdout, "event loop: uvloop")
        await read_until(served.stdout, "Running on")
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": "Bearer alice-token-0123456789"}
            async with session.get(served.url, params={"offset": "-1"}, headers=headers) as r:
                assert r.status == 200
                orgs = {m["value"]["org_id"] for m in await r.json() if "value" in m}
            assert orgs == {"acme"}
    assert served.proc.returncode == 0, served.output
    assert SECRET not in served.output and "alice-token-0123456789" not in served.output


def _children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def _alive(pid: str) -> bool:
    return Path(f"/proc/{pid}").exists()


async def test_workers_share_one_socket_and_stop_together(tmp_path: Path) -> None:
    chain = (
        '[[chain]]\nuse = "policy"\nshapes.todos = {}\n'
        f'[[chain]]\nuse = "credentials"\nsecret = "{SECRET}"\n'
    )
    async with serving(tmp_path, chain, "--workers", "2") as served:
        await read_until(served.stdout, "serving")
        await read_until(served.stdout, "serving")
        children = _children(served.proc.pid)
        assert len(children) == 2
        async with aiohttp.ClientSession() as session:
            for _ in range(20):
                async with session.get(served.url, params={"offset": "-1"}) as r:
                    assert r.status == 200
    assert served.proc.returncode == 0, served.output
    assert not any(_alive(pid) for pid in children)
