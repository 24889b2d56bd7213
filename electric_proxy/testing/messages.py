"""Read a shape response's body as Electric's client does: change messages and controls."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Change", "ShapeMessages", "live_params", "shape_messages"]


@dataclass(frozen=True)
class Change:
    """One change message: ``operation`` is ``insert``, ``update`` or ``delete``."""

    key: str
    operation: str
    value: Mapping[str, Any]
    headers: Mapping[str, Any]


@dataclass(frozen=True)
class ShapeMessages:
    """A shape response's messages, in order: the changes and the control words
    (``up-to-date``, ``must-refetch``, ``snapshot-end``)."""

    changes: tuple[Change, ...]
    controls: tuple[str, ...]

    @property
    def rows(self) -> list[Mapping[str, Any]]:
        """Every change's ``value``, in order (deletes carry the primary key only)."""
        return [change.value for change in self.changes]

    @property
    def up_to_date(self) -> bool:
        return "up-to-date" in self.controls


def shape_messages(body: str | bytes | Iterable[Mapping[str, Any]]) -> ShapeMessages:
    """Decode a shape response (its JSON text, or ``await resp.json()``) into changes and
    controls; a message that is neither fails the test, so protocol drift shows up."""
    messages = json.loads(body) if isinstance(body, str | bytes) else body
    changes: list[Change] = []
    controls: list[str] = []
    for message in messages:
        headers = message.get("headers", {})
        if "control" in headers:
            controls.append(headers["control"])
        elif "operation" in headers and "value" in message:
            key = message.get("key", "")
            changes.append(Change(key, headers["operation"], message["value"], headers))
        else:
            raise AssertionError(f"neither a change nor a control message: {message!r}")
    return ShapeMessages(tuple(changes), tuple(controls))


def live_params(headers: Mapping[str, str], **more: str) -> dict[str, str]:
    """The query that waits for the shape's next change after a response with ``headers``
    (``handle`` and ``offset`` from Electric's, ``live=true``), plus ``more`` (``table``,
    a distinct ``cursor`` so that requests do not share one upstream wait)."""
    return {
        **more,
        "handle": headers["electric-handle"],
        "offset": headers["electric-offset"],
        "live": "true",
    }
