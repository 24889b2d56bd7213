"""Bounded names for endpoints and steps, shared by metrics and readiness checks.

Both are fixed when the app is built, so they can be used as metric labels: the route is the
configured path (``<path>/*`` for a streams route, never a stream's name) and a step is
named by its class (a plain middleware by its function name), numbered when repeated.
"""

from __future__ import annotations

from collections.abc import Sequence

from .app import Endpoint
from .chain import Middleware
from .streams import StreamProxy

__all__ = ["route_label", "step_labels"]


def route_label(endpoint: Endpoint) -> str:
    return f"{endpoint.path}/*" if isinstance(endpoint, StreamProxy) else endpoint.path


def step_labels(steps: Sequence[Middleware]) -> dict[int, str]:
    """A label per step, keyed by ``id(step)``: ``JwtAuth``, ``JwtAuth#2``, ..."""
    labels: dict[int, str] = {}
    seen: dict[str, int] = {}
    for step in steps:
        name = getattr(step, "__name__", None) or type(step).__name__
        seen[name] = seen.get(name, 0) + 1
        labels[id(step)] = name if seen[name] == 1 else f"{name}#{seen[name]}"
    return labels
