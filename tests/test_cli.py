"""The electric-proxy command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

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


def test_check_config_refuses_a_shape_path_serve_could_not_use(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, '[server]\npath = "v1/shape/"\n[upstream]\nurl = "http://localhost:3000"\n'
    )
    result = run_cli("check-config", str(path))
    assert result.returncode == 1
    assert "server.path: expected a path like /v1/shape" in result.stderr


def _output(*args: str) -> tuple[int, str]:
    result = run_cli(*args)
    return result.returncode, result.stdout + result.stderr


def _option_rows(out: str) -> dict[str, dict[str, str]]:
    """The options table, each row cut at the header's column starts: option -> column -> cell."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("OPTION"))
    names = lines[header].split()
    starts = [lines[header].index(name) for name in names]
    table = {}
    for line in lines[header + 1 :]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        table[cells[0]] = dict(zip(names, cells, strict=True))
    return table


def test_plugins_options_shows_types_defaults_and_secrets() -> None:
    code, out = _output("plugins", "--options", "bearer")
    assert code == 0, out
    assert out.startswith("bearer: Authenticate with a fixed token list")
    rows = _option_rows(out)
    assert list(rows) == ["tokens", "tokens[].token", "tokens[].sub", "tokens[].claims", "callback"]
    assert rows["tokens"] == {
        "OPTION": "tokens",
        "TYPE": "list[StaticToken]",
        "DEFAULT": "[]",
        "SECRET": "no",
        "DESCRIPTION": "",
    }
    token = rows["tokens[].token"]
    assert (token["TYPE"], token["DEFAULT"], token["SECRET"]) == ("SecretStr", "(required)", "yes")
    assert rows["tokens[].sub"]["SECRET"] == "no"

    code, out = _output("plugins", "--options", "credentials")
    rows = _option_rows(out)
    assert rows["secret"]["TYPE"] == "SecretStr | None"
    assert rows["secret"]["SECRET"] == "yes"
    assert rows["secret_param"]["TYPE"] == '"secret" | "api_secret" | "source_secret"'
    assert rows["secret_param"]["DEFAULT"] == '"secret"'
    assert rows["source_id"]["DESCRIPTION"] == "Electric Cloud source id"


def test_plugins_options_of_an_unknown_step_suggests_one() -> None:
    code, out = _output("plugins", "--options", "berer")
    assert code == 1
    assert "no step named 'berer' is installed; did you mean 'bearer'?" in out


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


def test_version_and_python_dash_m() -> None:
    from electric_proxy import __version__

    result = run_cli("--version")
    assert (result.returncode, result.stdout) == (0, f"electric-proxy {__version__}\n")
    # `python -m electric_proxy` is the same command, for hosts with no script on PATH.
    module = subprocess.run(
        [sys.executable, "-m", "electric_proxy", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (module.returncode, module.stdout) == (0, result.stdout)


def test_the_version_is_written_once() -> None:
    """pyproject.toml reads it from _version.py; the installed metadata agrees."""
    from importlib.metadata import version

    from electric_proxy import __version__

    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "electric_proxy._version.__version__"
    }
    assert version("electric-proxy") == __version__


def test_check_config_show_is_toml_with_each_settings_source(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        (
            '[server]\nhost = "10.0.0.1"\nport = 9000\n'
            '[upstream]\nurl = "http://file:3000/v1/shape"\n'
            '[[chain]]\nuse = "credentials"\nsecret = { "$env" = "ELECTRIC_SECRET" }\n'
        ),
    )
    env = {
        "ELECTRIC_SECRET": SECRET,
        "ELECTRIC_PROXY_SERVER_PORT": "8081",
        "ELECTRIC_PROXY_UPSTREAM_URL": "http://env:3000/v1/shape",
    }
    result = run_cli("check-config", str(path), "--show", env=env)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    shown = tomllib.loads(result.stdout)  # the whole output, "ok" lines included as comments
    assert shown["server"]["port"] == 8081
    assert shown["server"]["host"] == "10.0.0.1"
    assert shown["upstream"]["url"] == "http://env:3000/v1/shape"
    assert shown["chain"] == [
        {"use": "credentials", "secret": "**********", "secret_param": "secret"}
    ]
    lines = result.stdout.splitlines()
    assert "port = 8081  # from ELECTRIC_PROXY_SERVER_PORT" in lines
    assert 'host = "10.0.0.1"  # from the file' in lines
    assert "backlog = 4096  # default" in lines
    assert 'url = "http://env:3000/v1/shape"  # from ELECTRIC_PROXY_UPSTREAM_URL' in lines
    assert 'secret = "**********"  # from $env ELECTRIC_SECRET' in lines
    assert f"# {path}: ok; /v1/shape chain: credentials" in lines


def test_check_config_names_a_bad_environment_variable(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[upstream]\nurl = "http://localhost:3000/v1/shape"\n')
    result = run_cli("check-config", str(path), env={"ELECTRIC_PROXY_SERVER_PORT": "eighty"})
    assert result.returncode == 1
    assert "ELECTRIC_PROXY_SERVER_PORT: expected an integer, not 'eighty'" in result.stderr


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[server]\nport = "8080"\n', "server.port: expected an integer, not a string"),
        (
            '[[chain]]\nuse = "bearer"\ntokns = []\n',
            "chain[0] (bearer).tokns: unknown option 'tokns', did you mean 'tokens'?",
        ),
        (
            '[[chain]]\nuse = "policy"\nshapes.todos.where = "org_id = :org-id"\n',
            "chain[0] (policy).shapes.todos.where: invalid row filter: ':org-id' is not one "
            "placeholder",
        ),
        # serve would fail to bind the metrics listener on the proxy's own port.
        (
            "[server]\nport = 9100\n[metrics]\nport = 9100\n",
            "metrics.port: 9100 is also server.port",
        ),
        # ... or the admin listener on the metrics port.
        (
            "[metrics]\nport = 9200\n[admin]\nport = 9200\n",
            "admin.port: 9200 is also metrics.port; the admin listener needs a port of its own",
        ),
    ],
)
def test_check_config_refuses_what_serve_would(tmp_path: Path, body: str, expected: str) -> None:
    path = write_config(tmp_path, f'[upstream]\nurl = "http://localhost:3000/v1/shape"\n{body}')
    result = run_cli("check-config", str(path))
    assert result.returncode == 1
    assert expected in result.stderr, result.stderr


def test_help_and_version_do_not_load_the_proxy() -> None:
    """--help answers before aiohttp, pydantic or pglast are imported: fast on any host. The
    package's own import must stay as light (its exports load on first use)."""
    code = (
        "import sys, contextlib, io\n"
        "from electric_proxy.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "heavy = ('aiohttp', 'pydantic', 'pglast', 'joserfc', 'electric_proxy.config')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


async def test_serve_takes_its_port_from_the_environment(tmp_path: Path) -> None:
    """The file says one port, ELECTRIC_PROXY_SERVER_PORT another: serve listens on the latter."""
    port = free_port()
    env = {"ELECTRIC_PROXY_SERVER_PORT": str(port)}
    chain = (
        '[[chain]]\nuse = "policy"\nshapes.todos = {}\n'
        f'[[chain]]\nuse = "credentials"\nsecret = "{SECRET}"\n'
    )
    async with serving(tmp_path, chain, env=env) as s:
        assert s.url != f"http://127.0.0.1:{port}/v1/shape"  # the file's port, not used
        await read_until(s.stdout, "Running on")
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/v1/shape"
            async with session.get(url, params={"offset": "-1", "table": "todos"}) as r:
                assert r.status == 200
    assert s.proc.returncode == 0, s.output


def test_check_config_with_workers_refuses_overlapping_listener_ports(tmp_path: Path) -> None:
    """Worker i listens for metrics on port + i and for the admin endpoint on its port + i:
    with 3 workers, metrics on 9300-9302 run into admin on 9302."""
    path = write_config(
        tmp_path,
        '[upstream]\nurl = "http://localhost:3000/v1/shape"\n'
        '[metrics]\nport = 9300\n[admin]\nport = 9302\n[revocation]\nredis_url = "redis://127.0.0.1:1"\n',
    )
    assert run_cli("check-config", str(path), "--workers", "2").returncode == 0
    result = run_cli("check-config", str(path), "--workers", "3")
    assert result.returncode == 1
    assert "admin.port: 9302 is also metrics.port with 3 workers" in result.stderr


def test_check_config_with_workers_refuses_a_shared_metrics_path(tmp_path: Path) -> None:
    """serve --workers 2 refuses [metrics] main_path; check-config --workers 2 says so first."""
    path = write_config(
        tmp_path,
        '[upstream]\nurl = "http://localhost:3000/v1/shape"\n[metrics]\nmain_path = "/metrics"\n',
    )
    assert run_cli("check-config", str(path)).returncode == 0
    result = run_cli("check-config", str(path), "--workers", "2")
    assert result.returncode == 1
    assert "metrics.main_path: cannot be used with --workers above 1" in result.stderr
