"""What only the Redis store does: replicas sharing one budget, a Redis that is down or comes
back, slots of a crashed replica ageing out, renewals, key expiry, and a password that never
shows. Against real redis-server processes on loopback (see conftest)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from electric_proxy_ratelimit import RateLimit, RedisBackend, limit_key
from pydantic import ValidationError
from ratelimit_fixtures import (  # noqa: F401 (fixtures)
    fixture_electric_upstream,
    fixture_own_redis_server,
    fixture_redis_server,
)
from ratelimit_support import SHAPE, add_todo, chain, finish, live_shape, unique_prefix
from redis.asyncio import Redis

from electric_proxy.testing import ALICE, RedisServer, RunningUpstream, auth, free_port

CATCH_UP = {"offset": "-1"}
ALICE_KEY = limit_key(SHAPE, "user:alice")


async def redis_now_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def on_redis(server: RedisServer, prefix: str, **options: Any) -> RateLimit:
    return RateLimit(backend="redis", redis_url=server.url, key_prefix=prefix, **options)


async def test_replicas_share_one_budget(
    proxy_client: Any, electric_upstream: RunningUpstream, redis_server: RedisServer
) -> None:
    prefix = unique_prefix()
    one = await proxy_client(chain(electric_upstream, on_redis(redis_server, prefix, burst=3)))
    two = await proxy_client(chain(electric_upstream, on_redis(redis_server, prefix, burst=3)))
    statuses = []
    for replica in (one, two, one, two):
        resp = await replica.get(SHAPE, params={"offset": "-1"}, headers=auth(ALICE))
        statuses.append(resp.status)
    assert statuses == [200, 200, 200, 429]


async def test_replicas_share_live_slots(
    proxy_client: Any, electric_upstream: RunningUpstream, redis_server: RedisServer
) -> None:
    prefix = unique_prefix()
    one = await proxy_client(chain(electric_upstream, on_redis(redis_server, prefix, max_live=1)))
    two = await proxy_client(chain(electric_upstream, on_redis(redis_server, prefix, max_live=1)))
    on_one = await live_shape(one, ALICE, electric_upstream, "acme")
    on_two = dataclasses.replace(on_one, client=two)  # the same shape, through the other
    held = on_one.hold(0)
    electric = electric_upstream.electric
    await electric.wait_until(lambda: electric.held == 1)
    assert (await on_two.probe()).status == 429
    add_todo(electric_upstream, "acme")
    assert await finish([held]) == [200]
    assert (await on_two.admitted_within()).status == 200


@pytest.mark.parametrize("live", [False, True])
async def test_redis_down_denies_by_default(
    proxy_client: Any,
    electric_upstream: RunningUpstream,
    caplog: pytest.LogCaptureFixture,
    live: bool,
) -> None:
    url = f"redis://:hunter2-password@127.0.0.1:{free_port()}/0"  # nothing listens there
    step = RateLimit(backend="redis", redis_url=url, backend_retry_after=3)
    client = await proxy_client(chain(electric_upstream, step))
    params = {"offset": "0_0", "handle": "h", "live": "true"} if live else CATCH_UP
    caplog.set_level(logging.WARNING, logger="electric_proxy_ratelimit")
    for n in range(3):
        resp = await client.get(SHAPE, params=params, headers=auth(ALICE))
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "3"
        body = await resp.text()
        assert json.loads(body)["error"] == "service_unavailable"
        assert "hunter2" not in body and "127.0.0.1" not in body
        assert step.backend_errors == n + 1
    assert electric_upstream.electric.requests == []
    # One warning, not one per request; it names the failure but not the server.
    warnings = [r for r in caplog.records if r.name == "electric_proxy_ratelimit"]
    assert len(warnings) == 1 and "ConnectionError" in warnings[0].getMessage()
    assert "hunter2" not in caplog.text and str(url) not in caplog.text


@pytest.mark.parametrize("live", [False, True])
async def test_redis_down_lets_requests_through_when_asked(
    proxy_client: Any, electric_upstream: RunningUpstream, live: bool
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    step = RateLimit(backend="redis", redis_url=url, on_backend_error="allow", burst=1)
    client = await proxy_client(chain(electric_upstream, step))
    alice_live = {"offset": "0_0", "handle": "stale", "live": "true"}
    for n in range(3):
        # A fresh cache-buster each time, so that Electric (not the shape cache) answers.
        catch_up = {**CATCH_UP, "cache-buster": str(n)}
        resp = await client.get(SHAPE, params=alice_live if live else catch_up, headers=auth(ALICE))
        assert resp.status == (409 if live else 200)  # Electric's answer: the limiter let it by
        assert step.backend_errors == n + 1
    assert len(electric_upstream.electric.requests) == 3


async def test_a_redis_restart_is_survived(
    proxy_client: Any,
    electric_upstream: RunningUpstream,
    own_redis_server: Callable[..., RedisServer],
) -> None:
    server = own_redis_server()
    step = on_redis(server, unique_prefix(), burst=100)
    client = await proxy_client(chain(electric_upstream, step))

    async def status() -> int:
        resp = await client.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))
        status: int = resp.status
        return status

    assert await status() == 200
    server.stop()
    assert await status() == 503
    server.start()  # same port, empty: the scripts are loaded again
    assert await status() == 200
    assert step.backend_errors == 1


async def test_a_crashed_replicas_slots_age_out(
    proxy_client: Any, electric_upstream: RunningUpstream, redis_server: RedisServer
) -> None:
    prefix = unique_prefix()
    client = await proxy_client(
        chain(electric_upstream, on_redis(redis_server, prefix, max_live=1))
    )
    alice = await live_shape(client, ALICE, electric_upstream, "acme")
    redis = Redis.from_url(redis_server.url)
    try:
        # What a replica that crashed mid long-poll leaves behind: a slot nobody renews.
        live_key = RedisBackend(redis, key_prefix=prefix).live_key(ALICE_KEY)
        await redis.zadd(live_key, {"crashed-replica:1": await redis_now_ms(redis) + 1000})
        assert (await alice.probe()).status == 429
        await asyncio.sleep(1.1)
        assert (await alice.probe()).status == 200
        assert await redis.zcard(live_key) == 0
    finally:
        await redis.aclose()


async def test_a_held_slot_is_renewed_past_its_ttl(
    proxy_client: Any, electric_upstream: RunningUpstream, redis_server: RedisServer
) -> None:
    prefix = unique_prefix()
    step = on_redis(redis_server, prefix, max_live=1, slot_ttl=0.6)
    client = await proxy_client(chain(electric_upstream, step))
    alice = await live_shape(client, ALICE, electric_upstream, "acme")
    held = alice.hold(0)
    electric = electric_upstream.electric
    await electric.wait_until(lambda: electric.held == 1)
    await asyncio.sleep(1.5)  # over twice the ttl
    assert (await alice.probe()).status == 429
    redis = Redis.from_url(redis_server.url)
    try:
        live_key = RedisBackend(redis, key_prefix=prefix).live_key(ALICE_KEY)
        assert await redis.zcard(live_key) == 1
        assert 0 < await redis.pttl(live_key) <= 600
        add_todo(electric_upstream, "acme")
        assert await finish([held]) == [200]
        assert (await alice.admitted_within()).status == 200
    finally:
        await redis.aclose()


async def test_keys_expire_once_they_hold_nothing_worth_keeping(
    proxy_client: Any, electric_upstream: RunningUpstream, redis_server: RedisServer
) -> None:
    prefix = unique_prefix()
    client = await proxy_client(
        chain(electric_upstream, on_redis(redis_server, prefix, rate=10, burst=5))
    )
    assert (await client.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))).status == 200
    redis = Redis.from_url(redis_server.url)
    try:
        keys = await redis.keys(f"{prefix}*")
        assert keys == [f"{prefix}bucket:{ALICE_KEY}".encode()]
        # One token short: full again in 0.1 s, plus a second of slack.
        assert 0 < await redis.pttl(keys[0]) <= 1100
    finally:
        await redis.aclose()


async def test_closing_gives_back_slots_still_held(redis_server: RedisServer) -> None:
    backend = RedisBackend.from_url(redis_server.url, key_prefix=unique_prefix())
    backend.start()
    assert await backend.acquire("k", 2) is not None
    assert await backend.acquire("k", 2) is not None
    assert await backend.acquire("k", 2) is None
    await backend.close()
    redis = Redis.from_url(redis_server.url)
    try:
        assert await redis.exists(backend.live_key("k")) == 0
    finally:
        await redis.aclose()


async def test_the_password_never_shows(
    proxy_client: Any,
    electric_upstream: RunningUpstream,
    own_redis_server: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = "s3cret-redis-password-4f9a"
    server = own_redis_server(password=password)
    good = on_redis(server, unique_prefix(), burst=2)
    wrong_url = server.url.replace(password, "wrong-" + password)
    wrong = RateLimit(backend="redis", redis_url=wrong_url)
    caplog.set_level(logging.DEBUG)

    client = await proxy_client(chain(electric_upstream, good))
    assert (await client.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))).status == 200
    denied = await proxy_client(chain(electric_upstream, wrong))
    resp = await denied.get(SHAPE, params=CATCH_UP, headers=auth(ALICE))
    assert resp.status == 503 and wrong.backend_errors == 1
    shown = [
        await resp.text(),
        caplog.text,
        repr(good),
        str(good),
        good.model_dump_json(),
        json.dumps(good.model_dump(mode="json")),
    ]
    for text in shown:
        assert password not in text
    with pytest.raises(ValidationError) as error:
        RateLimit(backend="redis", redis_url=f"http://:{password}@127.0.0.1/")
    assert password not in str(error.value)
