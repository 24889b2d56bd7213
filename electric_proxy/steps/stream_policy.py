"""Who may read, append to, create or delete which streams; default deny.

Patterns are matched segment by segment against the *decoded* stream path:

* a literal segment matches itself;
* ``{claim}`` matches a segment equal to the principal's claim (dotted paths reach nested
  claims; a missing or non-scalar claim, or a value holding ``/``, matches nothing);
* ``*`` matches one segment, ``**`` any number of segments (zero included).

Wildcards never match the reserved ``__ds`` control segment; a rule must name it literally.
A ``PUT`` that forks (``Stream-Forked-From``) also needs *read* on the source, or a user
could copy a stream they cannot read into one they can.
"""

from __future__ import annotations

import functools
from functools import cached_property
from typing import Literal

from aiohttp import hdrs, web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..chain import Principal, Step
from ..errors import Forbidden
from ..keys import FORK_SOURCE, PRINCIPAL, UPSTREAM

__all__ = ["StreamPolicy", "StreamRule"]

Action = Literal["read", "append", "create", "delete"]

_ACTIONS: dict[str, Action] = {
    "GET": "read",
    "HEAD": "read",
    "POST": "append",
    "PUT": "create",
    "DELETE": "delete",
}
_RESERVED = "__ds"


class StreamRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    paths: tuple[str, ...] = Field(min_length=1, description='e.g. "users/{sub}/**"')
    allow: tuple[Action, ...] = Field(min_length=1)

    @field_validator("paths")
    @classmethod
    def _well_formed(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        for path in paths:
            for segment in path.split("/"):
                if segment in ("", ".", ".."):
                    raise ValueError(f"{path!r}: empty, '.' and '..' segments cannot match")
                if ("{" in segment or "}" in segment) and not (
                    segment.startswith("{") and segment.endswith("}") and len(segment) > 2
                ):
                    raise ValueError(f"{path!r}: a {{claim}} must be a whole segment")
        return paths

    @cached_property
    def _patterns(self) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(p.split("/")) for p in self.paths)


def _claim(principal: Principal | None, name: str) -> str | None:
    if principal is None:
        return None
    try:
        value = principal.claim(name)
    except KeyError:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if text and "/" not in text else None


def _matches(pattern: tuple[str, ...], path: tuple[str, ...], principal: Principal | None) -> bool:
    @functools.cache
    def match(i: int, j: int) -> bool:
        if i == len(pattern):
            return j == len(path)
        part = pattern[i]
        if part == "**":
            return match(i + 1, j) or (j < len(path) and path[j] != _RESERVED and match(i, j + 1))
        if j == len(path):
            return False
        segment = path[j]
        if part == "*":
            ok = segment != _RESERVED
        elif part.startswith("{"):
            ok = _claim(principal, part[1:-1]) == segment
        else:
            ok = part == segment
        return ok and match(i + 1, j + 1)

    return match(0, 0)


class StreamPolicy(Step):
    """Allow a stream operation only when a rule grants it for the stream's path."""

    rules: tuple[StreamRule, ...] = Field(min_length=1)

    def allows(self, action: Action, path: tuple[str, ...], principal: Principal | None) -> bool:
        return any(
            action in rule.allow and any(_matches(p, path, principal) for p in rule._patterns)
            for rule in self.rules
        )

    async def on_request(self, request: web.Request) -> None:
        action = _ACTIONS.get(request.method)
        if action is None:
            return
        principal = request.get(PRINCIPAL)
        # The path the forwarder will send, exactly: decided on here, never derived again.
        if not self.allows(action, request[UPSTREAM].path, principal):
            raise Forbidden(f"{action} is not allowed on this stream", code="stream_not_allowed")
        source = request.get(FORK_SOURCE) if request.method == hdrs.METH_PUT else None
        if source is not None and not self.allows("read", source.segments, principal):
            raise Forbidden("forking needs read access to the source", code="stream_not_allowed")
