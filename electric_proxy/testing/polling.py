"""`eventually`: wait for a condition that nothing signals (a background refresh, a counter)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["eventually"]


async def eventually(
    condition: Callable[[], object],
    *,
    within: float = 5.0,
    interval: float = 0.01,
    message: str | Callable[[], str] = "condition not reached",
) -> None:
    """Return once ``condition()`` is true; fail the test after ``within`` seconds.

    For state that changes behind the test's back and has no event to await. ``message`` may be
    a callable, so the failure can show the state as it was at the deadline.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() >= deadline:
            raise AssertionError(message() if callable(message) else message)
        await asyncio.sleep(interval)
