"""Process tuning for `electric-proxy serve`: the event loop choice, the collector and the
C allocator."""

from __future__ import annotations

import asyncio
import gc
import platform
import subprocess
import sys
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


_WHERE_A_BODY_BUFFER_LIVES = """
import ctypes, sys
from electric_proxy.runtime import tune_malloc
tuned = sys.argv[1] == "tuned" and tune_malloc()
buffer = bytearray(2 * 1024 * 1024)  # a streamed body's worth, freshly allocated
address = ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))
heap = next(line.split()[0] for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]"))
low, high = (int(part, 16) for part in heap.split("-"))
print(tuned, low <= address < high)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_allocator_tuning_keeps_body_sized_buffers_in_the_heap() -> None:
    def run(mode: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", _WHERE_A_BODY_BUFFER_LIVES, mode],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    # glibc's default maps a 2 MiB block on its own (zero-filled by the kernel at each use);
    # tuned, it comes from the heap, whose pages stay with the process.
    assert run("default") == "False False"
    assert run("tuned") == "True True"
