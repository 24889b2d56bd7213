"""The in-memory store on a clock the test moves: bucket arithmetic, bounded memory, slots."""

from __future__ import annotations

import pytest
from electric_proxy_ratelimit import MemoryBackend, limit_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_full_bucket_then_the_wait_for_the_next_token(clock: Clock) -> None:
    store = MemoryBackend(clock=clock)
    assert [store.take_now("k", rate=2, burst=3) for _ in range(3)] == [0, 0, 0]
    assert store.take_now("k", rate=2, burst=3) == pytest.approx(0.5)
    clock.now += 0.25
    assert store.take_now("k", rate=2, burst=3) == pytest.approx(0.25)
    clock.now += 0.25
    assert store.take_now("k", rate=2, burst=3) == 0
    assert store.take_now("k", rate=2, burst=3) == pytest.approx(0.5)


def test_a_refusal_takes_nothing(clock: Clock) -> None:
    store = MemoryBackend(clock=clock)
    store.take_now("k", rate=1, burst=1)
    for _ in range(100):
        assert store.take_now("k", rate=1, burst=1) == pytest.approx(1.0)
    clock.now += 1
    assert store.take_now("k", rate=1, burst=1) == 0


def test_refill_stops_at_burst(clock: Clock) -> None:
    store = MemoryBackend(clock=clock)
    store.take_now("k", rate=10, burst=2)
    clock.now += 3600
    assert [store.take_now("k", rate=10, burst=2) for _ in range(3)][-1] > 0


def test_a_clock_going_backwards_adds_no_tokens(clock: Clock) -> None:
    store = MemoryBackend(clock=clock)
    store.take_now("k", rate=1, burst=1)
    clock.now -= 50
    assert store.take_now("k", rate=1, burst=1) > 0


def test_keys_are_independent(clock: Clock) -> None:
    store = MemoryBackend(clock=clock)
    store.take_now("alice", rate=1, burst=1)
    assert store.take_now("alice", rate=1, burst=1) > 0
    assert store.take_now("bob", rate=1, burst=1) == 0


def test_buckets_that_refilled_are_dropped(clock: Clock) -> None:
    store = MemoryBackend(clock=clock)
    for n in range(50):
        store.take_now(f"caller-{n}", rate=1, burst=5)
    assert len(store) == 50
    clock.now += 5  # every bucket is full again: the same as having none
    store.take_now("someone-new", rate=1, burst=5)
    assert len(store) == 1


def test_a_flood_of_new_keys_cannot_grow_memory(clock: Clock) -> None:
    store = MemoryBackend(max_keys=100, clock=clock)
    for n in range(10_000):
        store.take_now(f"flood-{n}", rate=0.001, burst=10)
        if n % 10 == 0:
            store.take_now("regular", rate=0.001, burst=10_000)
        assert len(store) <= 100
    # Recently used buckets stay; "regular" kept its count through the flood.
    assert store.take_now("regular", rate=0.001, burst=10_000) == 0
    assert len(store) == 100


async def test_live_slots_up_to_the_limit(clock: Clock) -> None:
    store = MemoryBackend(clock=clock)
    first = await store.acquire("k", 2)
    second = await store.acquire("k", 2)
    assert first is not None and second is not None
    assert await store.acquire("k", 2) is None
    assert await store.acquire("other", 2) is not None
    first.release()
    first.release()  # idempotent: a second release frees nothing more
    assert store.held("k") == 1
    third = await store.acquire("k", 2)
    assert third is not None and await store.acquire("k", 2) is None
    second.release()
    third.release()
    assert store.held("k") == 0


def test_limit_keys_cannot_collide() -> None:
    assert limit_key("/a:b", "user:c") != limit_key("/a", "b:user:c")
    assert limit_key("/v1/shape", "user:alice") != limit_key("/v1/shape", "ip:alice")
