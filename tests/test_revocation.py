"""Live revocation on real sockets: interrupts end exactly the matching held requests, the
admin endpoint, Redis between two apps, and credential expiry."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import ClientSession, TCPConnector, web
from aiohttp.test_utils import make_mocked_request
from joserfc import jws
from joserfc.jwk import OctKey

from electric_proxy import (
    CREDENTIAL_EXPIRES,
    METRICS,
    PRINCIPAL,
    REVOCATIONS,
    UPSTREAM,
    Credentials,
    GatekeeperVerifier,
    Interrupt,
    JwtAuth,
    Principal,
    Revocations,
    ShapePolicy,
    ShapeProxy,
    UpstreamSettings,
    parse_config,
)
from electric_proxy import revocation as revocation_module
from electric_proxy.config import ConfigError
from electric_proxy.inflight import InFlight
from electric_proxy.steps.bearer import BearerAuth
from electric_proxy.steps.jwt import ConfiguredAlgorithms
from electric_proxy.testing import (
    ALICE,
    BOB,
    RedisServer,
    RunningUpstream,
    auth,
    eventually,
    free_port,
    live_params,
    read_until,
    serve_app,
    start_cli,
    start_electric,
)

SHAPE = "/v1/shape"
HS_SECRET = "hs-secret-for-the-revocation-tests-0123456789abcdef"


@pytest.fixture
async def slow_upstream(aiohttp_server: Any) -> RunningUpstream:
    """Live requests held for 30 s: only the test ends them (a change or an interrupt)."""
    return await start_electric(aiohttp_server, long_poll_timeout=30.0, sse_timeout=30.0)


class Claims:
    """A session store the test edits: the callback reads the claims on every request."""

    def __init__(self) -> None:
        self.by_token = {
            ALICE: Principal("alice", {"sub": "alice", "org_id": "acme"}),
            BOB: Principal("bob", {"sub": "bob", "org_id": "globex"}),
        }

    async def __call__(self, request: web.Request) -> Principal | None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return self.by_token.get(token)


def chain(upstream: RunningUpstream, claims: Claims) -> list[Any]:
    columns = ["id", "org_id", "title", "done"]
    return [
        BearerAuth(callback=claims),
        ShapePolicy(
            shapes={
                "todos": {"where": "org_id = :org_id", "columns": columns},
                "titles": {"table": "todos", "where": "org_id = :org_id", "columns": columns[:3]},
            }
        ),
        Credentials(secret=upstream.secret),
    ]


class Held:
    """Live requests sent through one proxy, each remembered by a name."""

    def __init__(self, client: Any, shape: ShapeProxy, upstream: RunningUpstream) -> None:
        self.client = client
        self.shape = shape
        self.upstream = upstream
        self.tasks: dict[str, asyncio.Task[Any]] = {}

    async def hold(self, name: str, token: str, table: str = "todos", sse: bool = False) -> None:
        first = await self.client.get(
            SHAPE, params={"offset": "-1", "table": table}, headers=auth(token)
        )
        assert first.status == 200, await first.text()
        await first.read()
        # A distinct cursor: identical long-polls would share one upstream request.
        params = live_params(first.headers, table=table, cursor=name)
        headers = auth(token)
        if sse:
            params["live_sse"] = "true"
            headers["Accept"] = "text/event-stream"
        before = self.held()
        self.tasks[name] = asyncio.create_task(self._get(params, headers, sse))
        await eventually(lambda: self.held() == before + 1, within=10)

    async def _get(self, params: dict[str, str], headers: dict[str, str], sse: bool) -> Any:
        resp = await self.client.get(SHAPE, params=params, headers=headers)
        body = await resp.read()
        return resp.status, resp.headers, body

    def held(self) -> int:
        return sum(self.shape.inflight.held.values())

    async def ended(self, name: str) -> tuple[int, Any, bytes]:
        result: tuple[int, Any, bytes] = await asyncio.wait_for(self.tasks[name], 10)
        return result

    def waiting(self, *names: str) -> bool:
        return all(not self.tasks[n].done() for n in names)

    async def close(self) -> None:
        """Leave the requests still held (the client goes away), so teardown is quick."""
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


@pytest.fixture
async def held(aiohttp_client: Any, slow_upstream: RunningUpstream) -> AsyncIterator[Held]:
    shape = ShapeProxy(
        upstream=UpstreamSettings(url=slow_upstream.url), chain=chain(slow_upstream, Claims())
    )
    client = await aiohttp_client(shape.app())
    h = Held(client, shape, slow_upstream)
    yield h
    await h.close()


def assert_interrupted(result: tuple[int, Any, bytes]) -> None:
    status, headers, body = result
    assert status == 503
    assert headers["Retry-After"] == "0"
    assert json.loads(body)["error"] == "interrupted"


async def test_interrupt_by_principal_ends_only_that_users_requests(held: Held) -> None:
    await held.hold("alice-1", ALICE)
    await held.hold("alice-2", ALICE, table="titles")
    await held.hold("bob", BOB)
    revocations = Revocations([held.shape])
    assert revocations.interrupt(principal="alice") == 2
    assert_interrupted(await held.ended("alice-1"))
    assert_interrupted(await held.ended("alice-2"))
    # Bob's request is still held: it ends only when his shape changes.
    assert held.waiting("bob") and held.shape.inflight.held["long_poll"] == 1
    held.upstream.electric.insert(
        "todos", {"id": 50, "org_id": "globex", "title": "b", "done": False}
    )
    status, _, body = await held.ended("bob")
    assert status == 200 and b'"b"' in body
    assert held.shape.inflight.interrupted == 2


async def test_interrupt_by_claim_shape_and_predicate(held: Held) -> None:
    revocations = Revocations([held.shape])
    await held.hold("alice", ALICE)
    await held.hold("alice-titles", ALICE, table="titles")
    await held.hold("bob", BOB)
    await held.hold("bob-titles", BOB, table="titles")

    assert revocations.interrupt(claim={"org_id": "globex"}, shape="titles") == 1
    assert_interrupted(await held.ended("bob-titles"))
    assert held.waiting("alice", "alice-titles", "bob")

    assert revocations.interrupt(shape="titles") == 1
    assert_interrupted(await held.ended("alice-titles"))
    assert held.waiting("alice", "bob")

    # A predicate over (principal, upstream request): what the policy actually sent.
    assert revocations.interrupt(where=lambda p, up: up.query.get("params[1]") == "acme") == 1
    assert_interrupted(await held.ended("alice"))
    assert held.waiting("bob")
    # Nothing matches: nothing ends.
    assert revocations.interrupt(principal="carol") == 0
    assert revocations.interrupt(claim={"org_id": "initech"}) == 0
    assert held.waiting("bob")


async def test_an_interrupted_sse_stream_ends_cleanly(held: Held) -> None:
    await held.hold("alice", ALICE, sse=True)
    await held.hold("bob", BOB, sse=True)
    assert Revocations([held.shape]).interrupt(principal="alice") == 1
    status, _, body = await held.ended("alice")
    # The stream's 200 was already sent: it ends as Electric ends it every 60 s.
    assert status == 200
    assert body == b"" or body.endswith(b"\n\n")
    assert held.waiting("bob")


async def test_the_re_request_runs_the_chain_with_fresh_claims(
    aiohttp_client: Any, slow_upstream: RunningUpstream
) -> None:
    claims = Claims()
    shape = ShapeProxy(upstream=slow_upstream.url, chain=chain(slow_upstream, claims))
    client = await aiohttp_client(shape.app())
    h = Held(client, shape, slow_upstream)
    await h.hold("alice", ALICE)
    # Alice loses her organisation, then her held request is interrupted.
    claims.by_token[ALICE] = Principal("alice", {"sub": "alice"})
    assert Revocations([shape]).interrupt(principal="alice") == 1
    assert_interrupted(await h.ended("alice"))
    again = await client.get(SHAPE, params={"offset": "-1", "table": "todos"}, headers=auth(ALICE))
    assert again.status == 403


class Gate:
    """A plain middleware after the authenticator that holds live requests of one user at
    the gate until the test opens it: the window between authentication and the hold."""

    def __init__(self, sub: str) -> None:
        self.sub = sub
        self.waiting = 0
        self.open = asyncio.Event()

    async def __call__(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request[PRINCIPAL].id == self.sub and request[UPSTREAM].query.get("live"):
            self.waiting += 1
            await self.open.wait()
        response: web.StreamResponse = await handler(request)
        return response


async def test_an_interrupt_reaches_requests_already_past_their_authenticator(
    aiohttp_client: Any, slow_upstream: RunningUpstream
) -> None:
    """Alice's long-poll is authenticated, then the interrupt is issued before it is held:
    it is ended when it reaches the hold, not left waiting on her old claims. Bob's, past
    the same gate, is not picked by the interrupt and waits on."""
    claims = Claims()
    alice_gate, bob_gate = Gate("alice"), Gate("bob")
    bearer, policy, credentials = chain(slow_upstream, claims)
    shape = ShapeProxy(
        upstream=slow_upstream.url, chain=[bearer, alice_gate, bob_gate, policy, credentials]
    )
    h = Held(await aiohttp_client(shape.app()), shape, slow_upstream)
    bob_gate.open.set()
    await h.hold("bob", BOB)
    first = await h.client.get(
        SHAPE, params={"offset": "-1", "table": "todos"}, headers=auth(ALICE)
    )
    await first.read()
    position = live_params(first.headers, table="todos")
    h.tasks["alice"] = asyncio.create_task(h._get(position, auth(ALICE), sse=False))
    await eventually(lambda: alice_gate.waiting == 1, within=10)

    revocations = Revocations([shape])
    assert revocations.interrupt(principal="alice") == 0  # nothing of hers is held yet
    alice_gate.open.set()
    assert_interrupted(await h.ended("alice"))
    assert shape.inflight.interrupted == 1
    assert h.waiting("bob")
    # A request that arrives after the interrupt is not affected by it.
    h.tasks["alice-later"] = asyncio.create_task(
        h._get({**position, "cursor": "later"}, auth(ALICE), sse=False)
    )
    await eventually(lambda: shape.inflight.held["long_poll"] == 2, within=10)
    assert h.waiting("alice-later", "bob")
    await h.close()


def test_an_interrupt_missed_beyond_the_window_fails_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request whose interrupts were forgotten on its way (the window passed, or more
    than the limit were issued) is ended at its hold rather than trusted."""
    import electric_proxy.inflight as inflight_module

    inflight = InFlight()
    request = make_mocked_request("GET", "/v1/shape")
    inflight.arrive(request)
    inflight.interrupt(lambda r: False)
    assert not inflight._missed(request)  # issued since, picks nothing: not missed
    monkeypatch.setattr(inflight_module, "RECHECK_WINDOW", 0.0)
    inflight.interrupt(lambda r: False)  # forgets the first one
    assert inflight._missed(request)


def test_an_interrupt_needs_a_criterion() -> None:
    with pytest.raises(ValueError):
        Revocations().interrupt()
    with pytest.raises(ValueError):
        Interrupt.from_json({})
    with pytest.raises(ValueError):
        Interrupt.from_json({"principal": "alice", "role": "admin"})
    with pytest.raises(ValueError):
        Interrupt.from_json({"claim": {"org": {"nested": 1}}})
    assert Interrupt.from_json({"claim": {"org_id": "acme"}}).claim == {"org_id": "acme"}


# -- the admin endpoint ----------------------------------------------------------------------


def config(upstream: RunningUpstream, **sections: Any) -> dict[str, Any]:
    return {
        "upstream": {"url": upstream.url},
        "chain": [
            {
                "use": "bearer",
                "tokens": [
                    {"token": ALICE, "sub": "alice", "claims": {"org_id": "acme"}},
                    {"token": BOB, "sub": "bob", "claims": {"org_id": "globex"}},
                ],
            },
            {"use": "policy", "shapes": {"todos": {"where": "org_id = :org_id"}}},
            {"use": "credentials", "secret": upstream.secret},
        ],
        **sections,
    }


def test_the_admin_endpoint_is_off_by_default_and_refuses_open_hosts() -> None:
    raw = {"upstream": {"url": "http://127.0.0.1:1/v1/shape"}}
    assert parse_config(raw).admin is None
    with pytest.raises(ConfigError, match=r"admin: .*not loopback: set `token`"):
        parse_config({**raw, "admin": {"host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match=r"admin\.token"):
        parse_config({**raw, "admin": {"token": "short"}})
    shown = parse_config({**raw, "admin": {"host": "0.0.0.0", "token": "t" * 20}}).describe()
    assert "t" * 20 not in json.dumps(shown)


async def test_no_admin_listener_without_the_section(slow_upstream: RunningUpstream) -> None:
    app = parse_config(config(slow_upstream)).app()
    async with serve_app(app):
        assert app[REVOCATIONS].addresses == []


async def test_the_admin_endpoint_needs_its_token_and_answers_how_many_ended(
    aiohttp_client: Any, slow_upstream: RunningUpstream
) -> None:
    token = "admin-token-0123456789abcdef"
    app = parse_config(config(slow_upstream, admin={"port": 0, "token": token})).app()
    client = await aiohttp_client(app)
    revocations = app[REVOCATIONS]
    shape = revocations.endpoints[0]
    assert isinstance(shape, ShapeProxy)
    h = Held(client, shape, slow_upstream)
    await h.hold("alice", ALICE)
    await h.hold("bob", BOB)
    host, port = revocations.addresses[0][:2]
    url = f"http://{host}:{port}/admin/interrupt"
    async with ClientSession() as session:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
            async with session.post(url, json={"principal": "alice"}, headers=headers) as resp:
                assert resp.status == 401
        assert h.waiting("alice", "bob")
        good = {"Authorization": f"Bearer {token}"}
        for body in ({}, {"user": "alice"}, {"claim": ["org_id"]}):
            async with session.post(url, json=body, headers=good) as resp:
                assert resp.status == 400, body
        json_type = {**good, "Content-Type": "application/json"}
        async with session.post(url, data=b"{not json", headers=json_type) as resp:
            assert resp.status == 400
        # What a web page can send to loopback without a preflight: refused, nothing ended.
        for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            body = b'{"principal": "alice"}'
            headers = {**good, "Content-Type": kind}
            async with session.post(url, data=body, headers=headers) as resp:
                assert resp.status == 415, kind
                assert (await resp.json())["error"] == "unsupported_media_type"
        assert h.waiting("alice", "bob")
        async with session.post(url, json={"claim": {"org_id": "acme"}}, headers=good) as resp:
            assert resp.status == 200
            assert await resp.json() == {"ended": 1, "replicas": 0}
            assert resp.headers["Cache-Control"] == "no-store"
        async with session.get(url, headers=good) as resp:
            assert resp.status == 405
    assert_interrupted(await h.ended("alice"))
    assert h.waiting("bob")
    await h.close()


# -- Redis: two apps, one channel ------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Any) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@contextlib.asynccontextmanager
async def running(*revocations: Revocations) -> AsyncIterator[None]:
    """The Redis lifetime of each (as an app's cleanup context runs it), once all subscribed."""
    async with contextlib.AsyncExitStack() as stack:
        for revocation in revocations:
            cleanup = contextlib.asynccontextmanager(revocation.cleanup_ctx)
            await stack.enter_async_context(cleanup(web.Application()))
        await eventually(lambda: all(r.subscribed for r in revocations), within=10)
        yield


async def test_a_subscriber_comes_back_after_a_redis_outage(redis_server: RedisServer) -> None:
    a, b = Revocations(redis_url=redis_server.url), Revocations(redis_url=redis_server.url)
    async with running(a, b):
        redis_server.stop()
        await eventually(lambda: not b.subscribed, within=10)
        assert (await a.publish(Interrupt(principal="alice"))).replicas is None
        redis_server.start()
        await eventually(lambda: a.subscribed and b.subscribed, within=15)
        assert (await a.publish(Interrupt(principal="alice"))).replicas == 1
        await eventually(lambda: b.received == 1)


class FreezingRelay:
    """A TCP relay to Redis whose open connections can go silent without closing, as when
    a NAT or firewall drops its state: nothing arrives either way, no FIN, no RST. New
    connections are relayed as before."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen: list[asyncio.Event] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    def freeze(self) -> None:
        for event in self.frozen:
            event.set()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frozen = asyncio.Event()
        self.frozen.append(frozen)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                if frozen.is_set():
                    await asyncio.Event().wait()  # swallow it and hold the socket open
                dst.write(data)
                await dst.drain()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except OSError:
            pass  # either side went away: close both
        finally:
            writer.close()
            up_writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_a_subscription_the_network_silently_dropped_is_replaced(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection still looks open, but nothing arrives: unanswered pings show it, the
    subscriber reconnects, and the next interrupt reaches it."""
    monkeypatch.setattr(revocation_module, "PING_INTERVAL", 0.25)
    relay = FreezingRelay(redis_server.port)
    a = Revocations(redis_url=await relay.start())
    b = Revocations(redis_url=redis_server.url)
    async with running(a, b):
        relay.freeze()
        await eventually(lambda: not a.subscribed, within=10)
        await eventually(lambda: a.subscribed, within=10)
        # Redis still counts the dead connection's subscription (it has not noticed either).
        assert (await b.publish(Interrupt(principal="alice"))).replicas == 2
        await eventually(lambda: a.received == 1, within=10)
    await relay.close()


async def test_metrics_show_the_subscription_and_what_was_ended(
    aiohttp_client: Any, slow_upstream: RunningUpstream, redis_url: str
) -> None:
    metrics = {"listener": False, "main_path": "/metrics"}
    sections = {"revocation": {"redis_url": redis_url}, "metrics": metrics}
    app = parse_config(config(slow_upstream, **sections)).app()
    client = await aiohttp_client(app)
    revocations = app[REVOCATIONS]
    await eventually(lambda: revocations.subscribed, within=10)
    shape = revocations.endpoints[0]
    assert isinstance(shape, ShapeProxy)
    h = Held(client, shape, slow_upstream)
    await h.hold("alice", ALICE)
    assert revocations.interrupt(principal="alice") == 1
    assert_interrupted(await h.ended("alice"))
    scrape = app[METRICS].render()[0].decode()
    assert "electric_proxy_revocation_subscribed 1.0" in scrape
    assert "electric_proxy_revocation_received_total 0.0" in scrape
    assert 'electric_proxy_interrupted_requests_total{route="/v1/shape"} 1.0' in scrape
    assert 'electric_proxy_expired_requests_total{route="/v1/shape"} 0.0' in scrape
    await h.close()


async def test_an_interrupt_published_on_one_app_ends_the_request_held_on_another(
    aiohttp_client: Any, slow_upstream: RunningUpstream, redis_url: str
) -> None:
    replicas = []
    for _ in range(2):
        app = parse_config(config(slow_upstream, revocation={"redis_url": redis_url})).app()
        client = await aiohttp_client(app)
        replicas.append((app, client))
    (app_a, _), (app_b, client_b) = replicas
    a, b = app_a[REVOCATIONS], app_b[REVOCATIONS]
    await eventually(lambda: a.subscribed and b.subscribed, within=10)
    shape_b = b.endpoints[0]
    assert isinstance(shape_b, ShapeProxy)
    h = Held(client_b, shape_b, slow_upstream)
    await h.hold("alice", ALICE)
    await h.hold("bob", BOB)
    published = await a.publish(Interrupt(principal="alice"))
    assert published.ended == 0  # nothing held on A ...
    assert published.replicas == 1  # ... and B was told
    assert_interrupted(await h.ended("alice"))
    assert h.waiting("bob")
    assert b.received == 1 and a.received == 0
    await h.close()


# -- credential expiry -----------------------------------------------------------------------


def jwt(exp: int, sub: str = "alice", org: str = "acme") -> str:
    payload = {"sub": sub, "org_id": org, "exp": exp}
    return jws.serialize_compact(
        {"alg": "HS256", "typ": "JWT"},
        json.dumps(payload),
        OctKey.import_key(HS_SECRET.encode()),
        registry=ConfiguredAlgorithms(algorithms=["HS256"]),
    )


@pytest.mark.parametrize("sse", [False, True], ids=["long-poll", "sse"])
async def test_a_held_request_ends_when_its_token_expires(
    aiohttp_client: Any, slow_upstream: RunningUpstream, sse: bool
) -> None:
    steps = [
        JwtAuth(algorithms=["HS256"], secret=HS_SECRET, leeway=0),
        ShapePolicy(shapes={"todos": {"where": "org_id = :org_id"}}),
        Credentials(secret=slow_upstream.secret),
    ]
    shape = ShapeProxy(upstream=slow_upstream.url, chain=steps)
    client = await aiohttp_client(shape.app())
    h = Held(client, shape, slow_upstream)
    short = jwt(int(time.time()) + 4)
    long = jwt(int(time.time()) + 300, sub="bob", org="globex")
    await h.hold("short", short, sse=sse)
    await h.hold("long", long, sse=sse)
    status, _, body = await h.ended("short")
    if sse:
        assert status == 200 and (body == b"" or body.endswith(b"\n\n"))
    else:
        assert status == 503 and json.loads(body)["error"] == "credential_expired"
    assert h.waiting("long")
    assert shape.inflight.expired == 1
    again = await client.get(SHAPE, params={"offset": "-1"}, headers=auth(short))
    assert again.status == 401
    assert (await again.json())["error"] == "expired_token"
    await h.close()


async def alice_holds(session: ClientSession, url: str, count: int) -> list[asyncio.Task[int]]:
    """Sync Alice's todos once, then send ``count`` long-polls with distinct cursors (none
    shares an upstream request); the tasks give each answer's status."""
    async with session.get(
        url, params={"offset": "-1", "table": "todos"}, headers=auth(ALICE)
    ) as first:
        await first.read()
        position = live_params(first.headers, table="todos")

    async def hold(n: int) -> int:
        params = {**position, "cursor": str(n)}
        async with session.get(url, params=params, headers=auth(ALICE)) as resp:
            await resp.read()
            return resp.status

    return [asyncio.create_task(hold(n)) for n in range(count)]


async def test_revoking_many_held_requests_leaves_no_task_or_connection(
    slow_upstream: RunningUpstream,
) -> None:
    """``benchmarks/revocation.py`` measures 1,000; here 100, checked rather than timed."""
    count = 100
    shape = ShapeProxy(upstream=slow_upstream.url, chain=chain(slow_upstream, Claims()))
    electric = slow_upstream.electric
    async with (
        serve_app(shape.app()) as origin,
        # No keep-alive: a pooled connection (and its server task) would look like a leak.
        ClientSession(connector=TCPConnector(limit=0, force_close=True)) as client,
    ):
        url = origin + SHAPE
        baseline = len(asyncio.all_tasks())
        waiting = await alice_holds(client, url, count)
        await eventually(lambda: electric.held == count, within=30)
        assert Revocations([shape]).interrupt(claim={"org_id": "acme"}) == count
        assert set(await asyncio.gather(*waiting)) == {503}
        await eventually(lambda: electric.held == 0)
        await eventually(
            lambda: len(asyncio.all_tasks()) <= baseline,
            within=10,
            message=lambda: f"{len(asyncio.all_tasks())} tasks, {baseline} before",
        )
        assert shape.inflight.held == {"long_poll": 0, "sse": 0}


async def test_the_gatekeeper_records_its_tokens_expiry(
    aiohttp_client: Any, slow_upstream: RunningUpstream
) -> None:
    seen: list[float | None] = []

    async def look(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append(request.get(CREDENTIAL_EXPIRES))
        return await handler(request)

    gatekeeper = GatekeeperVerifier(algorithms=["HS256"], secret=HS_SECRET, leeway=5)
    claim = {"table": "todos", "where": "org_id = $1", "params": ["acme"]}
    exp = int(time.time()) + 60
    token = jws.serialize_compact(
        {"alg": "HS256", "typ": "JWT"},
        json.dumps({"sub": "alice", "exp": exp, "shape": claim}),
        OctKey.import_key(HS_SECRET.encode()),
        registry=ConfiguredAlgorithms(algorithms=["HS256"]),
    )
    shape = ShapeProxy(
        upstream=slow_upstream.url,
        chain=[gatekeeper, look, Credentials(secret=slow_upstream.secret)],
    )
    client = await aiohttp_client(shape.app())
    params = {"offset": "-1", "table": "todos", "where": "org_id = $1", "params[1]": "acme"}
    resp = await client.get(SHAPE, params=params, headers=auth(token))
    assert resp.status == 200, await resp.text()
    assert seen == [exp + 5]


async def test_workers_share_interrupts_through_redis(
    tmp_path: Any, slow_upstream: RunningUpstream, redis_url: str
) -> None:
    """``serve --workers 2``: the admin endpoint of worker 0 ends held requests on both."""
    port, admin_port = free_port(), free_port(consecutive=2)
    token = "admin-token-0123456789abcdef"
    path = tmp_path / "proxy.toml"
    path.write_text(
        f"[server]\nport = {port}\n"
        f'[upstream]\nurl = "{slow_upstream.url}"\n'
        f'[[chain]]\nuse = "bearer"\n'
        f'tokens = [{{ token = "{ALICE}", sub = "alice", claims = {{ org_id = "acme" }} }}]\n'
        f'[[chain]]\nuse = "policy"\nshapes = {{ todos = {{ where = "org_id = :org_id" }} }}\n'
        f'[[chain]]\nuse = "credentials"\nsecret = "{slow_upstream.secret}"\n'
        f'[admin]\nport = {admin_port}\ntoken = "{token}"\n'
        f'[revocation]\nredis_url = "{redis_url}"\n'
    )
    proc = await start_cli("serve", "--config", str(path), "--workers", "2")
    assert proc.stdout is not None
    output = ""
    try:
        for _ in range(2):
            output += await read_until(proc.stdout, "revocations subscribed")
        electric = slow_upstream.electric
        origin = f"http://127.0.0.1:{port}"
        async with ClientSession(connector=TCPConnector(force_close=True)) as session:
            # Fresh connections: the kernel spreads them over both workers.
            waiting = await alice_holds(session, origin + SHAPE, 8)
            await electric.wait_until(lambda: electric.held == 8, within=15)
            async with session.post(
                f"http://127.0.0.1:{admin_port}/admin/interrupt",
                json={"principal": "alice"},
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                assert resp.status == 200
                answer = await resp.json()
            assert answer["replicas"] == 1  # worker 1 was told
            # Every held request ends, wherever it was held.
            assert await asyncio.wait_for(asyncio.gather(*waiting), 15) == [503] * 8
            await electric.wait_until(lambda: electric.held == 0)
    finally:
        if proc.returncode is None:
            proc.terminate()
        output += (await asyncio.wait_for(proc.communicate(), 20))[0].decode()
    assert proc.returncode == 0, output
    assert token not in output and redis_url not in output


async def test_workers_refuse_an_admin_endpoint_without_redis(tmp_path: Any) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(
        f'[server]\nport = {free_port()}\n[upstream]\nurl = "http://127.0.0.1:9/v1/shape"\n'
        "[admin]\nport = 0\n"
    )
    refusal = "admin: with --workers above 1 it needs [revocation]"
    proc = await start_cli("serve", "--config", str(path), "--workers", "2")
    output = (await asyncio.wait_for(proc.communicate(), 20))[0].decode()
    assert proc.returncode == 1
    assert refusal in output
    # check-config --workers 2 says so before a deploy does.
    proc = await start_cli("check-config", str(path), "--workers", "2")
    output = (await asyncio.wait_for(proc.communicate(), 20))[0].decode()
    assert proc.returncode == 1
    assert refusal in output
