"""Process tuning for `electric-proxy serve`: the event loop choice and the collector."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest
import uvloop

from electric_proxy import ConfigError, parse_config
from electric_proxy.runtime import (
    MIDDLE_COLLECTION_THRESHOLD,
    YOUNG_COLLECTION_THRESHOLD,
    new_event_loop,
    tune_garbage_collector,
)

UPSTREAM = {"upstream": {"url": "http://electric:3000/v1/shape"}}


@pytest.mark.parametrize(
    ("choice", "loop_type"),
    [("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)],
)
def test_the_configured_event_loop_is_built(choice: str, loop_type: type) -> None:
    loop = new_event_loop(choice)  # type: ignore[arg-type]
    try:
        assert isinstance(loop, loop_type)
        if choice == "asyncio":
            assert not isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_asking_for_uvloop_without_it_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("electric_proxy.config.uvloop_available", lambda: False)
    with pytest.raises(ConfigError) as caught:
        parse_config({**UPSTREAM, "server": {"event_loop": "uvloop"}})
    assert "server.event_loop" in str(caught.value.problems)
    assert "electric-proxy[speed]" in str(caught.value.problems)


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_collector_tuning_freezes_start_up_objects(restored_gc: None) -> None:
    tune_garbage_collector()
    assert gc.get_threshold()[:2] == (YOUNG_COLLECTION_THRESHOLD, MIDDLE_COLLECTION_THRESHOLD)
    assert gc.get_freeze_count() > 0
