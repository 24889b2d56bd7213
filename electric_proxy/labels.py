"""Bounded names for steps, shared by metrics and readiness checks.

Fixed when the app is built, so they can be used as metric labels: a step is named by its
class (a plain middleware by its function name), numbered when repeated. (An endpoint names
itself: ``Endpoint.route_label``.)
"""

from __future__ import annotations

from collections.abc import Sequence

from .chain import Middleware

__all__ = ["step_labels"]


def step_labels(steps: Sequence[Middleware]) -> dict[int, str]:
    """A label per step, keyed by ``id(step)``: ``JwtAuth``, ``JwtAuth#2``, ..."""
    labels: dict[int, str] = {}
    seen: dict[str, int] = {}
    for step in steps:
        name = getattr(step, "__name__", None) or type(step).__name__
        seen[name] = seen.get(name, 0) + 1
        labels[id(step)] = name if seen[name] == 1 else f"{name}#{seen[name]}"
    return labels
