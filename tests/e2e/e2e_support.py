"""What the end-to-end tests share: prerequisites, real servers, the database model, Node.

The e2e tests run the real ``@electric-sql/client`` (Node and Chromium) against the proxy in
front of :class:`~electric_proxy.standin.FakeElectric`, all on real loopback sockets, because
Node and Chromium need a port they can reach. The Python side plays the database: it changes
the upstream's rows at the right moments and knows which rows each user must end up with.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler as AppHandler
from aiohttp.typedefs import Middleware as AppMiddleware
from multidict import CIMultiDict, CIMultiDictProxy

from electric_proxy import Credentials, ShapePolicy, ShapeProxy
from electric_proxy.chain import Handler, Middleware
from electric_proxy.standin import TENANT_ROWS, FakeElectric, two_tenant_upstream
from electric_proxy.testing import serve_app, two_users, unavailable

E2E_DIR = Path(__file__).resolve().parent
ROOT = E2E_DIR.parent.parent
ARTIFACTS = ROOT / "test-artifacts"
NODE_MODULES = E2E_DIR / "node_modules"
CHROMIUM = Path("/usr/bin/chromium")

SECRET = "e2e-upstream-secret-4b9d2f"
COLUMNS = ["id", "org_id", "title", "done"]

Row = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Prerequisites: skipped locally, a failure in CI.
# ---------------------------------------------------------------------------------------------


def _pinned_versions() -> dict[str, str]:
    manifest = json.loads((E2E_DIR / "package.json").read_text())
    dependencies: dict[str, str] = manifest["dependencies"]
    return dependencies


def require_prerequisites(*, browser: bool = False) -> str:
    """The path of ``node``; skip (fail when ``CI`` is set) if anything the test needs is missing.

    The npm packages must be installed at exactly the versions pinned in package.json.
    """
    missing: list[str] = []
    node = shutil.which("node")
    if node is None:
        missing.append("node (Node.js >= 20)")
    wanted = ["@electric-sql/client", *(["playwright-core"] if browser else [])]
    for package, version in _pinned_versions().items():
        if package not in wanted:
            continue
        installed = NODE_MODULES / package / "package.json"
        if not installed.is_file():
            missing.append(f"npm package {package} (tests/e2e/node_modules)")
        elif json.loads(installed.read_text()).get("version") != version:
            missing.append(f"npm package {package} at the pinned version {version}")
    if browser and not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (Debian package chromium)")
    if missing:
        reason = "end-to-end prerequisites missing: " + "; ".join(missing)
        reason += ". Run scripts/e2e-setup (as root) to install them."
        unavailable(reason)
    assert node is not None
    return node


# ---------------------------------------------------------------------------------------------
# The database: the fake Electric plus a model of what each tenant must see.
# ---------------------------------------------------------------------------------------------


@dataclass
class Database:
    """Changes the upstream's ``todos`` and tracks the rows each organisation must see."""

    electric: FakeElectric
    rows: dict[int, Row] = field(default_factory=dict)

    @classmethod
    def seeded(cls, electric: FakeElectric, initial: Sequence[Mapping[str, Any]]) -> Database:
        return cls(electric, {int(row["id"]): dict(row) for row in initial})

    def insert(self, row: Mapping[str, Any]) -> None:
        self.electric.insert("todos", row)
        self.rows[int(row["id"])] = {column: row.get(column) for column in COLUMNS}

    def update(self, row: Mapping[str, Any]) -> None:
        self.electric.update("todos", row)
        self.rows[int(row["id"])].update(row)

    def delete(self, row_id: int) -> None:
        self.electric.delete("todos", {"id": row_id})
        del self.rows[row_id]

    def visible(self, org: str) -> dict[str, Row]:
        """The rows ``org`` must hold, as the client materialises them (keyed by id text)."""
        return {str(i): dict(row) for i, row in sorted(self.rows.items()) if row["org_id"] == org}

    def ids(self, org: str) -> set[int]:
        return {i for i, row in self.rows.items() if row["org_id"] == org}


def by_id(rows: Sequence[Mapping[str, Any]]) -> dict[str, Row]:
    return {str(row["id"]): dict(row) for row in rows}


# ---------------------------------------------------------------------------------------------
# Servers on real sockets.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One request the proxy app answered, with the headers it sent back (CORS included)."""

    method: str
    path_qs: str
    query: Mapping[str, str]
    request_headers: CIMultiDictProxy[str]
    status: int
    headers: CIMultiDictProxy[str]


@dataclass
class Stack:
    """The fake Electric, the proxy in front of it, and what the proxy answered."""

    db: Database
    upstream_origin: str
    proxy_origin: str
    exchanges: list[Exchange]
    #: The shape endpoint itself, for tests that act on it (live revocation).
    proxy: ShapeProxy | None = None

    @property
    def electric(self) -> FakeElectric:
        return self.db.electric

    @property
    def shape_url(self) -> str:
        return self.proxy_origin + "/v1/shape"

    def shape_exchanges(self, method: str = "GET") -> list[Exchange]:
        return [e for e in self.exchanges if e.method == method]


def recording_middleware(exchanges: list[Exchange]) -> AppMiddleware:
    """An app middleware outside the whole chain: it sees every answer as the client gets it."""

    @web.middleware
    async def record(request: web.Request, handler: AppHandler) -> web.StreamResponse:
        response = await handler(request)
        exchanges.append(
            Exchange(
                method=request.method,
                path_qs=request.path_qs,
                query=dict(request.query),
                request_headers=request.headers,
                status=response.status,
                headers=CIMultiDictProxy(CIMultiDict(response.headers)),
            )
        )
        return response

    return record


def standard_chain(front: Sequence[Middleware] = ()) -> list[Middleware]:
    """``front`` steps, then bearer tokens for Alice (acme) and Bob (globex), the claim-bound
    ``todos`` policy and secret injection: what an application would deploy."""
    return [
        *front,
        two_users(),
        ShapePolicy(shapes={"todos": {"where": "org_id = :org_id", "columns": COLUMNS}}),
        Credentials(secret=SECRET),
    ]


class DropResponseHeader:
    """A test-only chain step that breaks the protocol: it deletes one response header."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        response.headers.popall(self.name, None)
        return response


@contextlib.asynccontextmanager
async def serving_database(
    *,
    extra_rows: Sequence[Mapping[str, Any]] = (),
    chunk_rows: int = 2,
    long_poll_timeout: float = 5.0,
) -> AsyncIterator[tuple[Database, str]]:
    """Serve the two-tenant fake Electric (plus ``extra_rows``), demanding :data:`SECRET`, on
    a loopback port; yield the database and the upstream's origin."""
    electric = two_tenant_upstream(
        SECRET, chunk_rows=chunk_rows, long_poll_timeout=long_poll_timeout
    )
    for row in extra_rows:
        electric.insert("todos", row)
    async with serve_app(electric.app()) as origin:
        yield Database.seeded(electric, [*TENANT_ROWS, *extra_rows]), origin


@contextlib.asynccontextmanager
async def running_stack(
    *,
    chain: Sequence[Middleware],
    extra_rows: Sequence[Mapping[str, Any]] = (),
    chunk_rows: int = 2,
    long_poll_timeout: float = 5.0,
) -> AsyncIterator[Stack]:
    """Start the two-tenant fake Electric (plus ``extra_rows``) and the proxy with ``chain``."""
    exchanges: list[Exchange] = []
    async with contextlib.AsyncExitStack() as stack:
        db, upstream_origin = await stack.enter_async_context(
            serving_database(
                extra_rows=extra_rows, chunk_rows=chunk_rows, long_poll_timeout=long_poll_timeout
            )
        )
        proxy = ShapeProxy(upstream=upstream_origin + "/v1/shape", chain=chain)
        app = web.Application(middlewares=[recording_middleware(exchanges)])
        proxy.setup(app)
        proxy_origin = await stack.enter_async_context(serve_app(app))
        yield Stack(
            db=db,
            upstream_origin=upstream_origin,
            proxy_origin=proxy_origin,
            exchanges=exchanges,
            proxy=proxy,
        )


# ---------------------------------------------------------------------------------------------
# A Node (or Python) process speaking JSON lines.
# ---------------------------------------------------------------------------------------------


class ClientFailed(AssertionError):
    """The Node side reported a failure (or died); carries its last event and stderr."""

    def __init__(self, message: str, event: Mapping[str, Any] | None, returncode: int | None):
        super().__init__(message)
        self.event = dict(event) if event is not None else None
        self.returncode = returncode


class NodeProcess:
    """``node <script>`` (or a Python script of the tests') with JSON events on stdout and
    JSON commands on stdin."""

    def __init__(self, process: asyncio.subprocess.Process, script: str) -> None:
        self.process = process
        self.script = script
        self.stderr: list[str] = []
        self.noise: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._stderr_task = asyncio.ensure_future(self._drain_stderr())

    @classmethod
    async def start(
        cls, interpreter: str, script: str, env: Mapping[str, str], args: Sequence[str] = ()
    ) -> NodeProcess:
        process = await asyncio.create_subprocess_exec(
            interpreter,
            str(E2E_DIR / script),
            *args,
            cwd=E2E_DIR,
            env={**os.environ, **env},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )
        return cls(process, script)

    async def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.stderr.append(line.decode(errors="replace").rstrip())

    def diagnostics(self) -> str:
        tail = "\n".join(self.stderr[-40:]) or "(empty)"
        noise = "\n".join(self.noise[-20:])
        return f"stderr of {self.script}:\n{tail}" + (f"\nother stdout:\n{noise}" if noise else "")

    async def event(self, expected: str, within: float = 20.0) -> dict[str, Any]:
        """The next event; it must be ``expected``. A ``failed`` event or EOF raises."""
        assert self.process.stdout is not None
        while True:
            try:
                line = await asyncio.wait_for(self.process.stdout.readline(), within)
            except TimeoutError:
                raise ClientFailed(
                    f"no {expected!r} event from {self.script} within {within} s\n"
                    + self.diagnostics(),
                    None,
                    self.process.returncode,
                ) from None
            if not line:
                returncode = await asyncio.wait_for(self.process.wait(), 5)
                await self._stderr_done()
                raise ClientFailed(
                    f"{self.script} exited ({returncode}) before {expected!r}\n"
                    + self.diagnostics(),
                    None,
                    returncode,
                )
            text = line.decode(errors="replace").strip()
            try:
                event = json.loads(text)
            except ValueError:
                self.noise.append(text)
                continue
            if not isinstance(event, dict) or "event" not in event:
                self.noise.append(text)
                continue
            self.events.append(event)
            if event["event"] == "failed":
                returncode = await asyncio.wait_for(self.process.wait(), 5)
                await self._stderr_done()
                detail = {k: v for k, v in event.items() if k != "responses"}
                raise ClientFailed(
                    f"{self.script} failed: {json.dumps(detail)}\n" + self.diagnostics(),
                    event,
                    returncode,
                )
            if event["event"] != expected:
                raise ClientFailed(
                    f"expected {expected!r} from {self.script}, got {text[:2000]}",
                    event,
                    self.process.returncode,
                )
            return event

    async def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()

    async def _stderr_done(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._stderr_task), 5)

    async def close(self) -> int:
        """Let the process end (closing stdin tells it to), killing it if it lingers."""
        process = self.process
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()
        if process.stdout is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.stdout.read(), 5)
        await self._stderr_done()
        if not self._stderr_task.done():
            self._stderr_task.cancel()
        assert process.returncode is not None
        return process.returncode


@contextlib.asynccontextmanager
async def node_process(
    node: str, script: str, env: Mapping[str, str]
) -> AsyncIterator[NodeProcess]:
    """Run ``node script`` for the block; it is ended (and reaped) however the block exits."""
    process = await NodeProcess.start(node, script, env)
    try:
        yield process
    finally:
        await process.close()


@contextlib.asynccontextmanager
async def python_process(
    script: str, args: Sequence[str], env: Mapping[str, str]
) -> AsyncIterator[NodeProcess]:
    """Run ``script`` (in tests/e2e) with this interpreter for the block, as :func:`node_process`
    runs a Node script: closing its stdin must make it exit."""
    process = await NodeProcess.start(sys.executable, script, env, args)
    try:
        yield process
    finally:
        await process.close()


def assert_revoked(done: Mapping[str, Any], live: str, rounds: int) -> None:
    """What ``revoke_client.mjs`` reports after ``rounds`` interrupts with unchanged claims,
    then one after Alice lost her organisation: it stopped on the 403, kept syncing between
    interrupts (long-polls: rows 301.. inserted between rounds), and rows 900 and 901,
    inserted after the revocation, never reached it."""
    arrived = {m["id"] for m in done["messages"]}
    assert not {900, 901} & arrived
    if live == "long-poll":
        assert set(range(301, 301 + rounds)) <= arrived
    assert not {900, 901} & set(done["rows"])
    statuses = [r["status"] for r in done["responses"]]
    assert statuses[-1] == 403
    assert statuses.count(503) == (rounds + 1 if live == "long-poll" else 0)
