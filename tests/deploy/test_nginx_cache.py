"""Debian's nginx with Electric's recommended cache settings in front of ``electric-proxy serve``.

Electric marks shape responses ``public`` (an hour in shared caches). Behind the proxy one URL
means different rows for different users, so a shared cache keyed on the URL alone hands one
user's rows to the next unless the proxy's responses say ``Vary: Authorization`` or
``private``. These tests put the real nginx (``nginx-cache.conf`` beside this file, cache key
the URL alone) in front of the real CLI running the README's standalone config and the demo,
and check what each user gets, and what nginx says it served (``X-Cache-Status``).

A control app that answers per-user rows as ``public`` without ``Vary`` shows, through the
same nginx, that the harness does see a leak when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from real_servers import stop_group

from electric_proxy.demo import DEMO_TOKENS
from electric_proxy.standin import TENANT_ROWS, Column, FakeElectric
from electric_proxy.testing import (
    ALICE,
    BOB,
    free_port,
    read_until,
    serve_app,
    start_cli,
    unavailable,
)

pytestmark = pytest.mark.timeout(90)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TEMPLATE = HERE / "nginx-cache.conf"
README = ROOT / "README.md"

SECRET = "nginx-electric-secret-5e1a93"
INITIAL = "/v1/shape?table=todos&offset=-1"
START_WITHIN = 20.0

# The README config selects `id, title, done` only, so rows are told apart by id. Row 5 is
# acme's but soft-deleted: the policy's `deleted_at IS NULL` keeps it from everybody.
ORG_IDS = {"acme": {1, 2}, "globex": {3, 4}}
DELETED_ROW = {"id": 5, "org_id": "acme", "title": "Soft-deleted", "done": False,
               "deleted_at": "2025-01-01T00:00:00Z"}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# nginx
# ---------------------------------------------------------------------------------------------


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        unavailable("nginx is not installed (Debian package nginx; scripts/test installs it)")
    return found


def render(template: str, **values: str) -> str:
    """Fill the ``${NAME}`` placeholders; every one must be given, and every value used."""
    placeholders = set(re.findall(r"\$\{([A-Z_]+)\}", template))
    assert placeholders == set(values), (placeholders, set(values))
    for name, value in values.items():
        template = template.replace("${" + name + "}", value)
    return template


async def _accepting(port: int, proc: asyncio.subprocess.Process, within: float) -> bool:
    """Poll until 127.0.0.1:port accepts; False when ``proc`` exits first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while proc.returncode is None and loop.time() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return True
    return False


def write_config(run_dir: Path, port: int, upstream: str) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    config = render(
        TEMPLATE.read_text(), RUN_DIR=str(run_dir), LISTEN=f"127.0.0.1:{port}", UPSTREAM=upstream
    )
    if os.geteuid() == 0:  # workers would drop to nobody, who cannot write to run_dir
        config = "user root root;\n" + config
    conf = run_dir / "nginx.conf"
    conf.write_text(config)
    return conf


@dataclass
class Nginx:
    origin: str
    run_dir: Path

    def error_log(self) -> str:
        path = self.run_dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else "(no error log)"


@contextlib.asynccontextmanager
async def running_nginx(upstream: str, run_dir: Path) -> AsyncIterator[Nginx]:
    """An nginx master (``daemon off``) on 127.0.0.1, caching ``upstream`` under ``run_dir``."""
    binary = nginx_binary()
    for attempt in range(3):  # the free port may be taken between choosing and binding it
        port = free_port()
        conf = write_config(run_dir, port, upstream)
        proc = await asyncio.create_subprocess_exec(
            binary, "-p", f"{run_dir}/", "-c", str(conf), "-e", str(run_dir / "error.log"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            nginx = Nginx(f"http://127.0.0.1:{port}", run_dir)
            if await _accepting(port, proc, START_WITHIN):
                yield nginx
                return
            log = nginx.error_log()
            if "Address already in use" not in log or attempt == 2:
                pytest.fail(f"nginx did not start (exit {proc.returncode}):\n{log}")
        finally:
            await stop_group(proc)


# ---------------------------------------------------------------------------------------------
# What a user got through the cache
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    status: int
    cache: str | None
    headers: Mapping[str, str]
    body: Any

    @property
    def rows(self) -> list[dict[str, Any]]:
        if not isinstance(self.body, list):
            return []
        return [m["value"] for m in self.body if isinstance(m, dict) and "value" in m]

    @property
    def ids(self) -> set[int]:
        return {int(row["id"]) for row in self.rows}


async def get(session: aiohttp.ClientSession, url: str, token: str | None) -> Seen:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with session.get(url, headers=headers) as resp:
        text = await resp.text()
        try:
            body: Any = await resp.json(content_type=None)
        except ValueError:
            body = text
        return Seen(resp.status, resp.headers.get("X-Cache-Status"), dict(resp.headers), body)


@dataclass
class Visits:
    """One URL asked by a sequence of users; what each got."""

    url: str
    seen: list[tuple[str, Seen]] = field(default_factory=list)

    async def run(
        self, session: aiohttp.ClientSession, users: Sequence[str], tokens: Mapping[str, str]
    ) -> None:
        for user in users:
            self.seen.append((user, await get(session, self.url, tokens[user])))

    @property
    def statuses(self) -> list[str | None]:
        return [seen.cache for _, seen in self.seen]

    def report(self) -> str:
        lines = [f"{self.url}:"]
        for user, seen in self.seen:
            vary, cc = seen.headers.get("Vary"), seen.headers.get("Cache-Control")
            lines.append(
                f"  {user}: {seen.status} {seen.cache} ids={sorted(seen.ids)} "
                f"Vary={vary!r} Cache-Control={cc!r}"
            )
        return "\n".join(lines)


SEQUENCE = ("alice", "alice", "bob", "bob", "alice")
EXPECTED = ["MISS", "HIT", "MISS", "HIT", "HIT"]


# ---------------------------------------------------------------------------------------------
# The proxy: `electric-proxy serve` with the README's standalone config
# ---------------------------------------------------------------------------------------------


def readme_standalone_toml() -> str:
    """The first TOML block of the README's "Running standalone" section, as written."""
    text = README.read_text()
    section = text[text.index("## Running standalone") :]
    match = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert match, "no ```toml block under 'Running standalone' in README.md"
    return match[1]


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"README's standalone config no longer has {old!r} once"
    return text.replace(old, new)


def standalone_config(upstream_url: str) -> str:
    """The README's config with the upstream here, and a token for Bob beside Alice's."""
    config = readme_standalone_toml()
    config = replace_once(config, '"http://electric:3000/v1/shape"', f'"{upstream_url}"')
    bob = '{ token = { "$env" = "BOB_TOKEN" }, sub = "bob", claims = { org_id = "globex" } }'
    return replace_once(
        config, 'claims = { org_id = "acme" } }]', f'claims = {{ org_id = "acme" }} }}, {bob}]'
    )


def todos_with_soft_delete() -> FakeElectric:
    """The two-tenant ``todos`` with the ``deleted_at`` column the README's policy filters on;
    one row per response, so the initial sync leaves a catch-up with rows in it."""
    electric = FakeElectric(secret=SECRET, chunk_rows=1)
    columns = [
        Column("id", "int8", primary_key=True, not_null=True),
        Column("org_id", "text", not_null=True),
        Column("title", "text"),
        Column("done", "bool"),
        Column("deleted_at", "timestamptz"),
    ]
    electric.add_table("todos", columns, [*TENANT_ROWS, DELETED_ROW])
    return electric


@contextlib.asynccontextmanager
async def cli_process(*args: str, ready: str, env: Mapping[str, str]) -> AsyncIterator[str]:
    """``electric-proxy <args>`` until the block ends; yields what it printed up to ``ready``."""
    proc = await start_cli(*args, env=env)
    assert proc.stdout is not None
    try:
        yield await asyncio.wait_for(read_until(proc.stdout, ready), START_WITHIN)
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.communicate(), 20)


@contextlib.asynccontextmanager
async def standalone_proxy(tmp_path: Path, upstream_url: str) -> AsyncIterator[str]:
    path = tmp_path / "proxy.toml"
    path.write_text(standalone_config(upstream_url))
    port = free_port()
    env = {"ALICE_TOKEN": ALICE, "BOB_TOKEN": BOB, "ELECTRIC_SECRET": SECRET}
    args = ("serve", "--config", str(path), "--host", "127.0.0.1", "--port", str(port))
    async with cli_process(*args, ready="Running on", env=env):
        yield f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


@dataclass
class Stack:
    """The README's config in ``electric-proxy serve`` behind nginx, and a client session."""

    electric: FakeElectric
    nginx: Nginx
    session: aiohttp.ClientSession

    async def visit(self, url: str) -> Visits:
        """Alice, Alice, Bob, Bob, Alice on ``url``; nobody may get another org's rows."""
        visits = Visits(self.nginx.origin + url)
        await visits.run(self.session, SEQUENCE, {"alice": ALICE, "bob": BOB})
        for user, seen in visits.seen:
            foreign = seen.ids - ORG_IDS["acme" if user == "alice" else "globex"]
            assert not foreign, f"{user} got rows {sorted(foreign)}\n{self.report(visits)}"
        return visits

    def report(self, visits: Visits) -> str:
        return visits.report() + "\n" + self.nginx.error_log()

    def shape_requests(self) -> int:
        return sum(1 for r in self.electric.requests if r.path == "/v1/shape")


@pytest.fixture
async def readme_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    nginx_binary()
    electric = todos_with_soft_delete()
    upstream = await electric.start()
    try:
        async with (
            standalone_proxy(tmp_path, upstream + "/v1/shape") as proxy,
            running_nginx(proxy, tmp_path / "nginx") as nginx,
            aiohttp.ClientSession() as session,
        ):
            yield Stack(electric, nginx, session)
    finally:
        await electric.stop()


async def catch_up_url(stack: Stack) -> str:
    """Alice's next request after her first chunk (her handle, her offset): a URL Bob can ask
    too, and Electric refuses him (409: not his shape's handle)."""
    alice = await get(stack.session, stack.nginx.origin + INITIAL, ALICE)
    assert alice.status == 200 and alice.ids == {1}, alice
    offset, handle = alice.headers["electric-offset"], alice.headers["electric-handle"]
    return f"/v1/shape?table=todos&offset={offset}&handle={handle}"


async def test_readme_config_behind_nginx_keeps_users_apart(readme_stack: Stack) -> None:
    """Alice, Alice, Bob, Bob, Alice on one URL: MISS, HIT, MISS, HIT, HIT, each with only
    their own rows; no token is a 401 however warm the cache, and leaves Alice's entry be."""
    stack = readme_stack
    initial = await stack.visit(INITIAL)
    report = stack.report(initial)
    assert [(s.status, s.ids) for _, s in initial.seen] == [
        (200, {1}), (200, {1}), (200, {3}), (200, {3}), (200, {1})
    ], report  # fmt: skip
    assert initial.statuses == EXPECTED, report
    assert stack.shape_requests() == 2  # one per user: every HIT was nginx's

    for _ in range(2):
        anonymous = await get(stack.session, stack.nginx.origin + INITIAL, None)
        assert anonymous.status == 401 and not anonymous.rows, anonymous
        assert anonymous.cache != "HIT", anonymous
    alice = await get(stack.session, stack.nginx.origin + INITIAL, ALICE)
    assert (alice.status, alice.ids, alice.cache) == (200, {1}, "HIT"), alice
    assert stack.shape_requests() == 2


async def test_readme_config_catch_up_url_keeps_users_apart(readme_stack: Stack) -> None:
    """On Alice's catch-up URL Alice gets her next row, from the cache the second time; Bob
    gets Electric's 409, never her row, also from the cache the second time."""
    stack = readme_stack
    catch_up = await stack.visit(await catch_up_url(stack))
    report = stack.report(catch_up)
    assert [(u, s.status, s.ids) for u, s in catch_up.seen] == [
        ("alice", 200, {2}), ("alice", 200, {2}), ("bob", 409, set()), ("bob", 409, set()),
        ("alice", 200, {2}),
    ], report  # fmt: skip
    assert catch_up.statuses[:4] == EXPECTED[:4], report


async def test_readme_config_catch_up_url_keeps_every_variant(readme_stack: Stack) -> None:
    """nginx keeps one Vary list per URL and compares lists as written: Alice's gzipped 200
    and Bob's 409 must name the same headers in the same order, or each evicts the other."""
    stack = readme_stack
    catch_up = await stack.visit(await catch_up_url(stack))
    assert catch_up.statuses == EXPECTED, stack.report(catch_up)


async def test_demo_behind_nginx_keeps_users_apart(tmp_path: Path) -> None:
    """``electric-proxy demo`` (``demo_config``) behind the same nginx."""
    nginx_binary()
    tokens = DEMO_TOKENS
    port = free_port()
    async with (
        cli_process(
            "demo", "--host", "127.0.0.1", "--port", str(port), ready="Ctrl-C stops", env={}
        ),
        running_nginx(f"http://127.0.0.1:{port}", tmp_path / "nginx") as nginx,
        aiohttp.ClientSession() as session,
    ):
        initial = Visits(nginx.origin + INITIAL)
        await initial.run(session, SEQUENCE, tokens)
        report = initial.report() + "\n" + nginx.error_log()
        for user, seen in initial.seen:
            orgs = {row["org_id"] for row in seen.rows}
            assert seen.status == 200 and orgs == {"acme" if user == "alice" else "globex"}, report
        assert initial.statuses == EXPECTED, report
        anonymous = await get(session, nginx.origin + INITIAL, None)
        assert anonymous.status == 401 and not anonymous.rows, anonymous


# -- the control: a leak the harness must see --------------------------------------------------


def per_user_rows_app(vary: str | None, asked: list[str]) -> web.Application:
    """Per-user rows marked ``public, s-maxage=3600``, with ``vary`` as the only defence."""
    rows = {
        f"Bearer {ALICE}": [{"id": 1, "org": "acme"}],
        f"Bearer {BOB}": [{"id": 3, "org": "globex"}],
    }

    async def shape(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        asked.append(auth)
        if auth not in rows:
            return web.json_response({"message": "who are you"}, status=401)
        headers = {"Cache-Control": "public, max-age=604800, s-maxage=3600"}
        if vary is not None:
            headers["Vary"] = vary
        return web.json_response([{"value": row} for row in rows[auth]], headers=headers)

    app = web.Application()
    app.router.add_get("/v1/shape", shape)
    return app


@pytest.mark.parametrize("vary", [None, "Authorization"])
async def test_control_nginx_leaks_without_vary(tmp_path: Path, vary: str | None) -> None:
    """Without ``Vary`` this nginx config serves Alice's rows to Bob (a HIT, the app asked
    once); with ``Vary: Authorization`` it keeps a variant per user."""
    asked: list[str] = []
    tokens = {"alice": ALICE, "bob": BOB}
    async with (
        serve_app(per_user_rows_app(vary, asked)) as origin,
        running_nginx(origin, tmp_path / "nginx") as nginx,
        aiohttp.ClientSession() as session,
    ):
        visits = Visits(nginx.origin + INITIAL)
        await visits.run(session, SEQUENCE, tokens)
    bob = [seen for user, seen in visits.seen if user == "bob"]
    if vary is None:
        assert visits.statuses == ["MISS", "HIT", "HIT", "HIT", "HIT"], visits.report()
        assert all(seen.ids == {1} for seen in bob), visits.report()  # Alice's row
        assert asked == [f"Bearer {ALICE}"]
    else:
        assert visits.statuses == EXPECTED, visits.report()
        assert all(seen.ids == {3} for seen in bob), visits.report()
        assert asked == [f"Bearer {ALICE}", f"Bearer {BOB}"]


def test_template_placeholders_are_all_filled() -> None:
    template = TEMPLATE.read_text()
    rendered = render(template, RUN_DIR="/run", LISTEN="127.0.0.1:1", UPSTREAM="http://x")
    assert "${" not in rendered
    with pytest.raises(AssertionError):
        render(template, RUN_DIR="/run", LISTEN="127.0.0.1:1")
