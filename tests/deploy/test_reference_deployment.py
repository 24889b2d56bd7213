"""The reference deployment in ``deploy/``, run as an operator would ship it.

Debian's nginx runs ``deploy/nginx/electric-proxy.conf`` (only its ports and file paths
changed, and a self-signed certificate made here) in front of two ``electric-proxy serve``
replicas started from ``deploy/proxy.toml`` as it stands (its ``$env`` values point at this
test's servers): the Electric stand-in, a JWKS server, and a real redis-server for the
replicas' shared rate limits. Everything listens on 127.0.0.1.

What is checked, through nginx over TLS:

* two users on one URL each get only their rows, and a repeat is a cache ``HIT``;
* 200 identical live requests waiting at once reach Electric once;
* SIGTERM to a replica holding long-polls loses no client: its 503s are retried by nginx
  on the other replica, and every client gets the change it waited for;
* an HTTP/2 client (curl) gets its rows.

The Kubernetes example's config is loaded and checked without a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import ssl
import sys
import textwrap
import time
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import RSAKey
from real_servers import stop_group
from test_nginx_cache import Seen

from electric_proxy.config import load_config, parse_config
from electric_proxy.standin import FakeElectric, two_tenant_upstream
from electric_proxy.testing import free_port, serve_app, unavailable

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
NGINX_CONF = DEPLOY / "nginx" / "electric-proxy.conf"
PROXY_TOML = DEPLOY / "proxy.toml"
KUBERNETES = DEPLOY / "kubernetes"

SECRET = "reference-electric-secret-20c4e1"
ISSUER = "https://idp.test/"
INITIAL = "/v1/shape?table=todos&offset=-1"
ORG_IDS = {"acme": {1, 2}, "globex": {3, 4}}
START_WITHIN = 30.0


# -- certificates and tokens --------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and electric.example.com, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "electric.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("electric.example.com"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "fullchain.pem", directory / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass(frozen=True)
class IdentityProvider:
    """Signs tokens for the replicas' ``jwt`` step and serves its key set."""

    key: RSAKey

    def app(self) -> web.Application:
        async def jwks(request: web.Request) -> web.Response:
            return web.json_response({"keys": [self.key.as_dict(private=False)]})

        app = web.Application()
        app.router.add_get("/jwks.json", jwks)
        return app

    def token(self, sub: str, org_id: str) -> str:
        claims = {
            "sub": sub,
            "org_id": org_id,
            "iss": ISSUER,
            "aud": "electric",
            "exp": int(time.time()) + 3600,
        }
        return jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, self.key)


# -- child processes ----------------------------------------------------------------------------


def binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        unavailable(f"{name} is not installed (Debian packages nginx, redis-server)")
    return found


async def accepting(port: int, proc: asyncio.subprocess.Process, within: float) -> None:
    """Poll until 127.0.0.1:port accepts; fail when ``proc`` exits first or time runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert proc.returncode is None, f"exited with {proc.returncode} before listening"
            assert loop.time() < deadline, f"nothing listens on {port} after {within} s"
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


@contextlib.asynccontextmanager
async def child(
    args: list[str], log: Path, port: int, env: Mapping[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A server in its own session, output to ``log``, until the block ends (then it and
    everything it started are stopped)."""
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    try:
        try:
            await accepting(port, proc, START_WITHIN)
        except AssertionError as exc:
            output = log.read_bytes().decode(errors="replace")  # noqa: ASYNC240 - a failure
            pytest.fail(f"{args[0]} did not start: {exc}\n{output}")
        yield proc
    finally:
        await stop_group(proc)


def render_nginx(run_dir: Path, https: int, http: int, replicas: list[int]) -> Path:
    """``deploy/nginx/electric-proxy.conf`` with this test's ports and paths, included in
    a main config that lets nginx run unprivileged in ``run_dir``."""
    cert, key = self_signed(run_dir)
    text = NGINX_CONF.read_text()
    replacements = {
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https} ssl http2;",
        "listen 80;": f"listen 127.0.0.1:{http};",
        "server 127.0.0.1:8081 ": f"server 127.0.0.1:{replicas[0]} ",
        "server 127.0.0.1:8082 ": f"server 127.0.0.1:{replicas[1]} ",
        "/etc/ssl/electric.example.com/fullchain.pem": str(cert),
        "/etc/ssl/electric.example.com/privkey.pem": str(key),
        "/var/cache/nginx/electric-proxy": str(run_dir / "cache"),
        "/var/log/nginx/electric-proxy.access.log": str(run_dir / "access.log"),
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{NGINX_CONF.name} no longer has {old!r} once"
        text = text.replace(old, new)
    site = run_dir / "electric-proxy.conf"
    site.write_text(text)
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers would drop to nobody
    main = f"""{user}daemon off;
worker_processes 1;
pid {run_dir}/nginx.pid;
error_log {run_dir}/error.log warn;
events {{ worker_connections 2048; }}
http {{
    client_body_temp_path {run_dir}/client_body;
    proxy_temp_path {run_dir}/proxy_temp;
    fastcgi_temp_path {run_dir}/fastcgi_temp;
    uwsgi_temp_path {run_dir}/uwsgi_temp;
    scgi_temp_path {run_dir}/scgi_temp;
    include {site};
}}
"""
    conf = run_dir / "nginx.conf"
    conf.write_text(main)
    return conf


@contextlib.asynccontextmanager
async def start_redis(run_dir: Path, port: int) -> AsyncIterator[str]:
    args = [binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
    args += ["--save", "", "--appendonly", "no", "--dir", str(run_dir)]
    async with child(args, run_dir / "redis.log", port):
        yield f"redis://127.0.0.1:{port}/0"


# -- the stack ----------------------------------------------------------------------------------


@dataclass
class Replica:
    proc: asyncio.subprocess.Process
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Stack:
    electric: FakeElectric
    idp: IdentityProvider
    origin: str
    cafile: Path
    run_dir: Path
    replicas: list[Replica]
    session: aiohttp.ClientSession

    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, user: str) -> dict[str, str]:
        """The user's one token: a token minted a second later (another ``exp``) is another
        ``Authorization``, so another cache variant."""
        if user not in self.tokens:
            org = "acme" if user == "alice" else "globex"
            self.tokens[user] = self.idp.token(user, org)
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def report(self) -> str:
        parts = [f"--- replica {r.port}\n{r.output()[-3000:]}" for r in self.replicas]
        error_log = self.run_dir / "nginx" / "error.log"
        if error_log.exists():
            parts.append(f"--- nginx error.log\n{error_log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def live_requests(self) -> list[Any]:
        return [r for r in self.electric.requests if r.query.get("live") == "true"]


async def get(stack: Stack, path: str, user: str) -> Seen:
    async with stack.session.get(stack.origin + path, headers=stack.auth(user)) as resp:
        body = await resp.json(content_type=None)
        return Seen(resp.status, resp.headers.get("X-Cache-Status"), dict(resp.headers), body)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    nginx = binary("nginx")
    binary("redis-server")
    electric = two_tenant_upstream(secret=SECRET)
    idp = IdentityProvider(RSAKey.generate_key(2048, auto_kid=True))
    (tmp_path / "nginx").mkdir()
    async with contextlib.AsyncExitStack() as stack_:
        electric_url = await electric.start()
        stack_.push_async_callback(electric.stop)
        jwks = await stack_.enter_async_context(serve_app(idp.app()))
        redis_url = await stack_.enter_async_context(start_redis(tmp_path, free_port()))
        env = {
            "ELECTRIC_URL": f"{electric_url}/v1/shape",
            "ELECTRIC_SECRET": SECRET,
            "JWKS_URL": f"{jwks}/jwks.json",
            "JWT_ISSUER": ISSUER,
            "RATELIMIT_REDIS_URL": redis_url,
        }
        replicas = []
        for index in range(2):
            port = free_port()
            log = tmp_path / f"replica-{index}.log"
            args = [sys.executable, "-m", "electric_proxy.cli", "serve", "--config",
                    str(PROXY_TOML), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
            proc = await stack_.enter_async_context(child(args, log, port, env))
            replicas.append(Replica(proc, port, log))
        https, http = free_port(), free_port()
        conf = render_nginx(tmp_path / "nginx", https, http, [r.port for r in replicas])
        run_dir = tmp_path / "nginx"
        args = [nginx, "-p", f"{run_dir}/", "-c", str(conf), "-e", str(run_dir / "error.log")]
        await stack_.enter_async_context(child(args, run_dir / "stdout.log", https))
        context = ssl.create_default_context(cafile=str(run_dir / "fullchain.pem"))
        session = await stack_.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=0))
        )
        yield Stack(
            electric, idp, f"https://127.0.0.1:{https}", run_dir / "fullchain.pem", tmp_path,
            replicas, session,
        )  # fmt: skip


async def live_url(stack: Stack, user: str) -> tuple[str, Seen]:
    """The user's initial sync, and the live URL that waits for the next change."""
    first = await get(stack, INITIAL, user)
    assert first.status == 200, (first, stack.report())
    offset, handle = first.headers["electric-offset"], first.headers["electric-handle"]
    return f"/v1/shape?table=todos&offset={offset}&handle={handle}&live=true", first


# -- tests --------------------------------------------------------------------------------------


async def test_users_apart_through_the_cache_and_a_repeat_is_a_hit(stack: Stack) -> None:
    seen = [(user, await get(stack, INITIAL, user)) for user in
            ("alice", "alice", "bob", "bob", "alice")]  # fmt: skip
    report = "\n".join(f"{u}: {s.status} {s.cache} {sorted(s.ids)}" for u, s in seen)
    for user, got in seen:
        assert got.status == 200, report + stack.report()
        assert got.ids == ORG_IDS["acme" if user == "alice" else "globex"], report
    assert [got.cache for _, got in seen] == ["MISS", "HIT", "MISS", "HIT", "HIT"], report
    assert sum(r.path == "/v1/shape" for r in stack.electric.requests) == 2


async def test_identical_live_waits_reach_electric_once(stack: Stack) -> None:
    """200 clients wait on one live URL at once: nginx's cache lock lets one through (the
    replicas would coalesce any that got past it), and the change reaches all 200."""
    url, _ = await live_url(stack, "alice")
    sent = 0

    async def on_sent(*_: Any) -> None:
        nonlocal sent
        sent += 1

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(on_sent)
    context = ssl.create_default_context(cafile=str(stack.cafile))
    headers = stack.auth("alice")
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context, limit=0), trace_configs=[trace]
    ) as session:

        async def wait() -> Seen:
            async with session.get(stack.origin + url, headers=headers) as resp:
                body = await resp.json(content_type=None)
                return Seen(resp.status, resp.headers.get("X-Cache-Status"), {}, body)

        waits = [asyncio.create_task(wait()) for _ in range(200)]
        await stack.electric.wait_until(lambda: stack.electric.held == 1, within=20)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while sent < 200:
            assert loop.time() < deadline, f"only {sent} of 200 requests sent"
            await asyncio.sleep(0.05)
        stack.electric.insert("todos", {"id": 10, "org_id": "acme", "title": "new", "done": False})
        answers = await asyncio.wait_for(asyncio.gather(*waits), 60)
    assert all(a.status == 200 and a.ids == {10} for a in answers), stack.report()
    assert len(stack.live_requests()) == 1, stack.live_requests()
    caches = Counter(a.cache for a in answers)
    assert caches["MISS"] == 1 and caches["HIT"] == 199, caches


async def test_sigterm_to_a_replica_loses_no_held_client(stack: Stack) -> None:
    """Eight long-polls spread over both replicas; one replica gets SIGTERM. Its held
    requests are answered 503 and nginx retries them on the other replica, where they wait
    on; the next change reaches all eight, and the stopped replica exits 0."""
    url, _ = await live_url(stack, "alice")
    headers = stack.auth("alice")

    async def wait(n: int) -> Seen:
        # Distinct cursors: distinct URLs, so neither nginx nor the proxy collapses them.
        async with stack.session.get(f"{stack.origin}{url}&cursor=c{n}", headers=headers) as resp:
            body = await resp.json(content_type=None)
            return Seen(resp.status, resp.headers.get("X-Cache-Status"), {}, body)

    waits = [asyncio.create_task(wait(n)) for n in range(8)]
    await stack.electric.wait_until(lambda: stack.electric.held == 8, within=20)
    stopping = stack.replicas[0]
    stopping.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(stopping.proc.wait(), 30) == 0, stack.report()
    # Retried: every one of the eight waits again, now all on the other replica.
    await stack.electric.wait_until(lambda: stack.electric.held == 8, within=20)
    assert not any(w.done() for w in waits)
    stack.electric.insert("todos", {"id": 11, "org_id": "acme", "title": "new", "done": False})
    answers = await asyncio.wait_for(asyncio.gather(*waits), 30)
    assert [(a.status, a.ids) for a in answers] == [(200, {11})] * 8, stack.report()
    # The stopped replica did answer held requests 503 (what nginx retried).
    lines = [json.loads(line) for line in stopping.output().splitlines() if line[:1] == "{"]
    # Every line is JSON (log_format follows access_log = "json"); access lines have a status.
    drained = [
        line for line in lines if line.get("status") == 503 and "live=true" in line.get("query", "")
    ]
    assert drained, stopping.output()


async def test_http2_client_gets_its_rows(stack: Stack) -> None:
    curl = shutil.which("curl")
    if curl is None:
        unavailable("curl is not installed")
    version = await asyncio.create_subprocess_exec(curl, "-V", stdout=asyncio.subprocess.PIPE)
    features = (await version.communicate())[0].decode()
    if "HTTP2" not in features:
        unavailable("this curl has no HTTP/2 support")
    proc = await asyncio.create_subprocess_exec(
        curl, "--silent", "--show-error", "--http2", "--cacert", str(stack.cafile),
        "--header", stack.auth("bob")["Authorization"].join(["Authorization: ", ""]),
        "--write-out", "\n%{http_version} %{http_code}", stack.origin + INITIAL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    body, _, status = out.decode().rpartition("\n")
    assert status == "2 200", (status, body)
    assert '"org_id":"globex"' in body.replace(" ", "") and "acme" not in body


# -- the Kubernetes example ---------------------------------------------------------------------


def configmap_toml() -> str:
    text = (KUBERNETES / "configmap.yaml").read_text()
    block = text.split("  proxy.toml: |\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


@pytest.fixture
def deploy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "ELECTRIC_URL": "http://electric:3000/v1/shape",
        "ELECTRIC_SECRET": "s" * 32,
        "JWKS_URL": "https://idp.example.com/.well-known/jwks.json",
        "JWT_ISSUER": ISSUER,
        "RATELIMIT_REDIS_URL": "redis://redis:6379/0",
    }.items():
        monkeypatch.setenv(name, value)
    yield


def test_the_reference_configs_load(deploy_env: None) -> None:
    nginx_side = load_config(PROXY_TOML)
    assert [name for name, _ in nginx_side.steps][1:] == ["jwt", "rate_limit", "policy",
                                                          "credentials"]  # fmt: skip
    cluster = parse_config(tomllib.loads(configmap_toml()))
    assert (cluster.server.host, cluster.server.port) == ("0.0.0.0", 8080)
    assert [name for name, _ in cluster.steps] == [name for name, _ in nginx_side.steps]


def number(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    assert found is not None, pattern
    return int(found[1])


def test_the_kubernetes_probes_match_the_config(deploy_env: None) -> None:
    config = parse_config(tomllib.loads(configmap_toml()))
    deployment = (KUBERNETES / "deployment.yaml").read_text()
    readiness = deployment.split("readinessProbe:")[1].split("livenessProbe:")[0]
    liveness = deployment.split("livenessProbe:")[1].split("lifecycle:")[0]
    assert f"path: {config.health.readyz}" in readiness
    assert f"path: {config.health.healthz}" in liveness
    assert f"containerPort: {config.server.port}" in deployment
    assert config.metrics is not None and f"containerPort: {config.metrics.port}" in deployment
    # The grace period covers the preStop sleep, the drain delay and the shutdown timeout.
    grace = number(r"terminationGracePeriodSeconds: (\d+)", deployment)
    pre_stop = number(r'command: \["sleep", "(\d+)"\]', deployment)
    assert grace > pre_stop + config.server.drain_delay + config.server.shutdown_timeout
