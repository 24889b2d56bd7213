"""The shape cache: users whose built upstream requests are identical share Electric's bytes.

On real sockets through the Electric stand-in; the stand-in's recorded requests say what
reached Electric, and a clock injected into the cache stands in for the passing of time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from electric_proxy import (
    BearerAuth,
    ConfigError,
    Cors,
    Credentials,
    Metrics,
    Principal,
    RequestId,
    ResponseHeaders,
    ShapePolicy,
    ShapeProxy,
    StaticToken,
    parse_config,
)
from electric_proxy.chain import Middleware
from electric_proxy.shape_cache import (
    DEFAULT_SHAPE_CACHE_BYTES,
    ShapeCache,
    etag_matches,
    shared_lifetime,
)
from electric_proxy.testing import ALICE, BOB, ProxyTestServer, RunningUpstream, auth

CAROL = "token-carol-acme-0000003"  # Alice's colleague: same organisation, other user
APP = "https://app.example"
SNAPSHOT = {"table": "todos", "offset": "-1"}
IDENTITY = {"Accept-Encoding": "identity"}


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tokens() -> list[StaticToken]:
    return [
        StaticToken(token=ALICE, sub="alice", claims={"org_id": "acme"}),
        StaticToken(token=CAROL, sub="carol", claims={"org_id": "acme"}),
        StaticToken(token=BOB, sub="bob", claims={"org_id": "globex"}),
    ]


def chain(upstream: RunningUpstream, *before: Middleware, secret: str | None = None) -> list[Any]:
    todos = {
        "where": "org_id = :org_id",
        "columns": ["id", "org_id", "title", "done"],
        "client_where": True,
        "filter_columns": {"title": "text", "done": "bool"},
        "subsets": True,
    }
    return [
        *before,
        BearerAuth(tokens=tokens()),
        ShapePolicy(shapes={"todos": todos}),
        Credentials(secret=secret or upstream.secret),
    ]


Make = Callable[..., Awaitable[tuple[TestClient[Any, Any], ShapeCache]]]


@pytest.fixture
def make(aiohttp_client: Any, electric_upstream: RunningUpstream) -> Make:
    """``await make(chain, cache=ShapeCache(...))``: a proxy whose shape cache the test holds."""

    async def build(
        steps: Sequence[Middleware] | None = None, *, cache: ShapeCache | None = None
    ) -> tuple[TestClient[Any, Any], ShapeCache]:
        proxy = ShapeProxy(
            upstream=electric_upstream.url,
            chain=chain(electric_upstream) if steps is None else steps,
        )
        if cache is not None:
            proxy.forwarder.shape_cache = cache
        held = proxy.forwarder.shape_cache
        assert held is not None, "on by default"
        client: TestClient[Any, Any] = await aiohttp_client(ProxyTestServer(proxy.app()))
        return client, held

    return build


def upstream_count(upstream: RunningUpstream) -> int:
    return len(upstream.electric.requests)


async def get(client: TestClient[Any, Any], token: str, **extra: Any) -> tuple[Any, bytes]:
    headers = {**auth(token), **IDENTITY, **extra.pop("headers", {})}
    resp = await client.get("/v1/shape", params={**SNAPSHOT, **extra}, headers=headers)
    return resp, await resp.read()


async def test_users_of_one_tenant_share_one_upstream_answer(
    make: Make, electric_upstream: RunningUpstream
) -> None:
    client, cache = await make()
    alice, alice_body = await get(client, ALICE)
    carol, carol_body = await get(client, CAROL)
    assert alice.status == carol.status == 200
    assert carol_body == alice_body and b"Ship the proxy" in alice_body
    assert carol.headers["electric-handle"] == alice.headers["electric-handle"]
    assert upstream_count(electric_upstream) == 1
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)
    assert cache.bytes_held > len(alice_body)


async def test_other_tenants_filters_and_encodings_never_share(
    make: Make, electric_upstream: RunningUpstream
) -> None:
    client, cache = await make()
    _, acme = await get(client, ALICE)
    _, globex = await get(client, BOB)
    assert b"Plan the launch" in globex and b"Ship the proxy" not in globex
    assert b"Ship the proxy" in acme
    _, filtered = await get(client, CAROL, where="done = true")
    assert b"Write the threat model" in filtered and b"Ship the proxy" not in filtered
    gzipped, gzipped_body = await get(client, CAROL, headers={"Accept-Encoding": "gzip"})
    assert gzipped.headers["Content-Encoding"] == "gzip"
    assert b"Ship the proxy" in gzipped_body  # aiohttp's client inflated it
    # Same user, same URL, now identity again: the identity entry, not the gzip one.
    plain, plain_body = await get(client, CAROL)
    assert "Content-Encoding" not in plain.headers and plain_body == acme
    assert upstream_count(electric_upstream) == 4
    assert cache.hits == 1


async def test_another_secret_is_another_request(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    """Two chains that differ only in the credential they add share one cache: the wrong
    secret must reach Electric (and be refused) rather than get the right one's answer."""
    right = ShapeProxy(upstream=electric_upstream.url, chain=chain(electric_upstream))
    wrong = ShapeProxy(
        upstream=electric_upstream.url,
        chain=chain(electric_upstream, secret="not-the-upstream-secret-0000"),
    )
    shared = right.forwarder.shape_cache
    wrong.forwarder.shape_cache = shared
    app = web.Application()
    right.setup(app)
    app.add_subapp("/wrong", wrong.app())
    client = await aiohttp_client(ProxyTestServer(app))
    first = await client.get("/v1/shape", params=SNAPSHOT, headers=auth(ALICE))
    refused = await client.get("/wrong/v1/shape", params=SNAPSHOT, headers=auth(ALICE))
    assert first.status == 200
    assert refused.status >= 400 and b"Ship the proxy" not in await refused.read()
    assert upstream_count(electric_upstream) == 2


async def test_an_entry_expires_after_its_shared_lifetime(
    make: Make, electric_upstream: RunningUpstream
) -> None:
    clock = Clock()
    client, _ = await make(cache=ShapeCache(clock=clock))
    first, _ = await get(client, ALICE)
    # Electric: `public, max-age=604800, s-maxage=3600`; a shared cache obeys s-maxage.
    assert "s-maxage=3600" in first.headers["Cache-Control"]
    clock.now += 3599
    again, _ = await get(client, CAROL)
    assert upstream_count(electric_upstream) == 1
    assert again.headers["Age"] == "3599"
    clock.now += 2
    await get(client, CAROL)
    assert upstream_count(electric_upstream) == 2
    # A catch-up chunk says `max-age=60` (no s-maxage): 60 seconds.
    catch_up = {"handle": first.headers["electric-handle"], "offset": "0_0"}
    await get(client, ALICE, **catch_up)
    clock.now += 59
    await get(client, CAROL, **catch_up)
    assert upstream_count(electric_upstream) == 3
    clock.now += 2
    await get(client, CAROL, **catch_up)
    assert upstream_count(electric_upstream) == 4


async def test_if_none_match_is_answered_from_the_cached_etag(
    make: Make, electric_upstream: RunningUpstream
) -> None:
    client, _ = await make()
    first, _ = await get(client, ALICE)
    etag = first.headers["ETag"]
    same, body = await get(client, CAROL, headers={"If-None-Match": etag})
    assert same.status == 304 and body == b""
    assert same.headers["ETag"] == etag
    assert same.headers["electric-handle"] == first.headers["electric-handle"]
    other, body = await get(client, CAROL, headers={"If-None-Match": '"something-else"'})
    assert other.status == 200 and b"Ship the proxy" in body
    assert upstream_count(electric_upstream) == 1


async def test_memory_is_bounded_least_recently_used_first(
    make: Make, electric_upstream: RunningUpstream
) -> None:
    sizing, cache = await make()
    await get(sizing, ALICE)
    one = cache.bytes_held
    await get(sizing, BOB)
    two = cache.bytes_held - one
    # Room for Alice's and Bob's entries and not one byte more.
    client, small = await make(cache=ShapeCache(one + two, max_entry_bytes=one + two))
    await get(client, ALICE)  # acme
    await get(client, BOB)  # globex
    await get(client, CAROL)  # acme again: now the most recently used
    before = upstream_count(electric_upstream)
    await get(client, ALICE, where="done = true")  # a third entry: globex must go
    assert small.evictions == 1 and len(small) == 2
    assert small.bytes_held <= small.max_bytes
    await get(client, CAROL)
    assert upstream_count(electric_upstream) == before + 1  # acme stayed
    await get(client, BOB)
    assert upstream_count(electric_upstream) == before + 2  # globex was evicted


async def test_a_body_over_the_entry_limit_streams_uncached(
    make: Make, electric_upstream: RunningUpstream
) -> None:
    client, cache = await make(cache=ShapeCache(max_entry_bytes=64))
    _, body = await get(client, ALICE)
    _, again = await get(client, CAROL)
    assert body == again and b"Ship the proxy" in body and len(body) > 64
    assert len(cache) == 0 and upstream_count(electric_upstream) == 2


async def test_the_per_entry_limit_holds_for_streamed_bodies_too() -> None:
    cache = ShapeCache(1000, max_entry_bytes=10)
    headers = CIMultiDict({"Cache-Control": "public, max-age=60"})

    async def body(*chunks: bytes) -> Any:
        for chunk in chunks:
            yield chunk

    def streamed(key: str, *chunks: bytes) -> Any:
        fill = cache.fill(key)
        assert fill is not None
        return fill.stream((200, "OK", headers), body(*chunks))

    assert [c async for c in streamed("long", b"12345", b"678901")] == [b"12345", b"678901"]
    assert [c async for c in streamed("short", b"12345", b"6789")] == [b"12345", b"6789"]
    assert await cache.lookup("long") is None
    entry = await cache.lookup("short")
    assert entry is not None and entry.body == b"123456789"
    cut = streamed("cut", b"12", b"34")
    assert await anext(cut) == b"12"
    await cut.aclose()  # the client went away: an incomplete body is never stored
    assert await cache.lookup("cut") is None
    assert cache.filling_bytes == 0


async def test_identical_misses_together_make_one_trip(
    make: Make, electric_upstream: RunningUpstream
) -> None:
    client, cache = await make()
    answers = await asyncio.gather(*(get(client, (ALICE, CAROL)[n % 2]) for n in range(20)))
    assert {resp.status for resp, _ in answers} == {200}
    assert len({body for _, body in answers}) == 1
    assert upstream_count(electric_upstream) == 1
    assert (cache.hits, cache.misses) == (19, 1)
    # Answers that may not be stored (a subset says no-cache) wake the waiters, who ask
    # Electric themselves.
    subset = {"subset__limit": "1", "subset__order_by": "title"}
    answers = await asyncio.gather(*(get(client, ALICE, **subset) for _ in range(5)))
    assert {resp.status for resp, _ in answers} == {200}
    assert upstream_count(electric_upstream) == 1 + 5


async def test_a_fill_that_never_ends_is_given_up() -> None:
    """A fill whose response was never sent (a step replaced it) cannot hold others back."""
    cache = ShapeCache(1000, fill_wait=0)
    stuck = cache.fill("key")
    assert stuck is not None
    assert await cache.lookup("key") is None  # waited at most fill_wait
    again = cache.fill("key")
    assert again is not None and again is not stuck
    again.store((200, "OK", CIMultiDict({"Cache-Control": "max-age=60"})), b"[]")
    assert await cache.lookup("key") is not None
    stuck.end()  # late, and harmless
    assert await cache.lookup("key") is not None


async def test_errors_posts_subsets_and_live_requests_are_not_stored(
    make: Make, electric_upstream: RunningUpstream
) -> None:
    client, cache = await make()
    first, _ = await get(client, ALICE)
    handle = first.headers["electric-handle"]
    # Electric refuses an offset beyond the log: an error, never stored.
    for _ in range(2):
        bad, _ = await get(client, ALICE, handle=handle, offset="999_0")
        assert bad.status == 400
    # A POST subset (and a GET subset: `no-cache`) goes to Electric every time.
    for _ in range(2):
        resp = await client.post(
            "/v1/shape",
            params=SNAPSHOT,
            json={"where": "done = $1", "params": {"1": "false"}, "limit": 5, "order_by": "title"},
            headers={**auth(ALICE), **IDENTITY},
        )
        assert resp.status == 200, await resp.text()
    for _ in range(2):
        subset, _ = await get(client, ALICE, subset__limit="1", subset__order_by="title")
        assert subset.status == 200 and "no-cache" in subset.headers["Cache-Control"]
    # Live requests are the coalescer's: every live answer comes from Electric.
    live = {"handle": handle, "offset": first.headers["electric-offset"], "live": "true"}
    for _ in range(2):
        resp, _ = await get(client, ALICE, **live, cursor="1")
        assert resp.status == 200
    assert upstream_count(electric_upstream) == 1 + 2 + 2 + 2 + 2
    assert len(cache) == 1


async def test_a_409_is_stored_only_with_a_new_handle(
    make: Make, electric_upstream: RunningUpstream
) -> None:
    client, cache = await make()
    await get(client, ALICE)
    gone = {"handle": "1-gone", "offset": "0_0"}
    first, body = await get(client, ALICE, **gone)
    again, again_body = await get(client, CAROL, **gone)
    assert first.status == again.status == 409 and "electric-handle" in again.headers
    assert again_body == body and b"must-refetch" in body
    assert upstream_count(electric_upstream) == 2
    # Without a handle (and for the answers no shared cache may store), nothing is kept.
    no_handle = CIMultiDict({"Cache-Control": "public, max-age=1, must-revalidate"})
    assert shared_lifetime(409, no_handle) is None
    assert shared_lifetime(409, CIMultiDict(no_handle, **{"electric-handle": "h"})) == 1
    for refused in ("no-store", "private, max-age=60", "no-cache, max-age=60", "public"):
        assert shared_lifetime(200, CIMultiDict({"Cache-Control": refused})) is None
    assert shared_lifetime(200, CIMultiDict({"Cache-Control": "max-age=60", "Vary": "*"})) is None
    assert shared_lifetime(500, CIMultiDict({"Cache-Control": "max-age=60"})) is None
    assert shared_lifetime(200, CIMultiDict({"Cache-Control": "max-age=60, s-maxage=5"})) == 5
    assert shared_lifetime(200, CIMultiDict({"Cache-Control": "max-age=60", "Age": "50"})) == 10
    assert len(cache) == 2


async def test_a_user_whose_claims_change_gets_the_new_shape_at_once(
    make: Make, electric_upstream: RunningUpstream
) -> None:
    organisation = {"org_id": "acme"}

    async def session(request: web.Request) -> Principal | None:
        return Principal("dana", dict(organisation))

    todos = {"where": "org_id = :org_id", "columns": ["id", "org_id", "title", "done"]}
    steps = [
        BearerAuth(callback=session),
        ShapePolicy(shapes={"todos": todos}),
        Credentials(secret=electric_upstream.secret),
    ]
    client, _ = await make(steps)
    _, before = await get(client, ALICE)
    organisation["org_id"] = "globex"
    _, after = await get(client, ALICE)
    assert b"Ship the proxy" in before
    assert b"Plan the launch" in after and b"Ship the proxy" not in after
    assert upstream_count(electric_upstream) == 2


async def test_the_whole_chain_runs_on_a_hit(
    make: Make, electric_upstream: RunningUpstream
) -> None:
    steps = chain(electric_upstream, Cors(allow_origins=[APP]), RequestId(), ResponseHeaders())
    client, cache = await make(steps)
    origin = {"Origin": APP}
    first, _ = await get(client, ALICE, headers=origin)
    hit, _ = await get(client, CAROL, headers=origin)
    assert cache.hits == 1 and upstream_count(electric_upstream) == 1
    for resp in (first, hit):
        assert resp.headers["Access-Control-Allow-Origin"] == APP
        assert "Authorization" in resp.headers["Vary"]
    assert hit.headers["X-Request-ID"] != first.headers["X-Request-ID"]
    # A bad token is refused before the cache is asked, cached URL or not.
    refused = await client.get(
        "/v1/shape",
        params=SNAPSHOT,
        headers={"Authorization": "Bearer not-a-known-token-000000", **origin},
    )
    assert refused.status == 401 and b"Ship the proxy" not in await refused.read()
    assert refused.headers["Access-Control-Allow-Origin"] == APP
    missing = await client.get("/v1/shape", params=SNAPSHOT, headers=origin)
    assert missing.status == 401
    assert cache.hits == 1


async def test_off_with_zero_bytes(electric_upstream: RunningUpstream, aiohttp_client: Any) -> None:
    proxy = ShapeProxy(
        upstream=electric_upstream.url, chain=chain(electric_upstream), shape_cache_bytes=0
    )
    assert proxy.forwarder.shape_cache is None
    client = await aiohttp_client(ProxyTestServer(proxy.app()))
    for _ in range(2):
        assert (await get(client, ALICE))[0].status == 200
    assert upstream_count(electric_upstream) == 2


async def test_metrics_read_the_cache_counters(
    electric_upstream: RunningUpstream, aiohttp_client: Any
) -> None:
    pytest.importorskip("prometheus_client")
    metrics = Metrics()
    proxy = ShapeProxy(
        upstream=electric_upstream.url, chain=chain(electric_upstream), observers=[metrics]
    )
    app = proxy.app()
    metrics.setup(app, path="/metrics")
    client = await aiohttp_client(ProxyTestServer(app))
    await get(client, ALICE)
    await get(client, CAROL)
    text = await (await client.get("/metrics")).text()
    assert 'electric_proxy_shape_cache_hits_total{route="/v1/shape"} 1.0' in text
    assert 'electric_proxy_shape_cache_misses_total{route="/v1/shape"} 1.0' in text
    assert 'electric_proxy_shape_cache_evictions_total{route="/v1/shape"} 0.0' in text
    cache = proxy.forwarder.shape_cache
    assert cache is not None
    held = float(cache.bytes_held)
    assert f'electric_proxy_shape_cache_bytes{{route="/v1/shape"}} {held}' in text


def test_etag_comparison() -> None:
    assert etag_matches(['"a:1"'], '"a:1"')
    assert etag_matches(['"x", W/"a:1"'], '"a:1"')
    assert etag_matches(["*"], '"a:1"')
    assert not etag_matches(['"a:2"'], '"a:1"')
    assert not etag_matches(['"a:1"'], None)


def test_configured_under_server() -> None:
    def build(**server: Any) -> ShapeProxy:
        raw = {"server": server, "upstream": {"url": "http://electric:3000"}, "chain": []}
        return parse_config(raw).build()

    default = build().forwarder.shape_cache
    assert default is not None and default.max_bytes == DEFAULT_SHAPE_CACHE_BYTES
    sized = build(shape_cache_bytes=1_000_000).forwarder.shape_cache
    assert sized is not None and sized.max_bytes == 1_000_000
    assert build(shape_cache_bytes=0).forwarder.shape_cache is None
    with pytest.raises(ConfigError, match="shape_cache_bytes"):
        build(shape_cache_bytes=-1)
