"""Cache safety for per-user responses.

Electric marks shape responses ``public`` (the initial one for a week, an hour in shared
caches), because it cannot know they depend on who asked. Behind this proxy they do. Two
ways to keep one user's rows out of another's cache entry:

* ``vary`` (default): add ``Vary: Authorization`` (and/or ``Cookie``). Caches that honour
  ``Vary`` (browsers, nginx, Varnish, most CDNs) key entries by those headers and still
  collapse identical live requests of one user.
* ``private``: rewrite ``Cache-Control`` to ``private`` and drop ``s-maxage``, for
  deployments behind a cache that ignores ``Vary``. Browsers still cache; shared caches
  store nothing, so CDN request-collapsing is lost.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from aiohttp import hdrs, web
from multidict import CIMultiDict
from pydantic import Field

from ..chain import Handler, Step

__all__ = ["ResponseHeaders", "merge_vary"]


def merge_vary(headers: CIMultiDict[str], *names: str) -> None:
    """Add ``names`` to ``Vary`` once each, keeping what is there; ``*`` absorbs everything."""
    present = [v.strip() for value in headers.getall(hdrs.VARY, ()) for v in value.split(",")]
    present = [v for v in present if v]
    if "*" in present:
        headers[hdrs.VARY] = "*"
        return
    known = {v.lower() for v in present}
    merged = present
    for name in names:
        if name.lower() not in known:
            known.add(name.lower())
            merged.append(name)
    if merged:
        headers[hdrs.VARY] = ", ".join(merged)


def _private(cache_control: str) -> str:
    directives = [d.strip() for d in cache_control.split(",") if d.strip()]
    kept = [
        d
        for d in directives
        if d.lower() not in ("public", "private") and not d.lower().startswith("s-maxage")
    ]
    if any(d.lower() == "no-store" for d in kept):
        return ", ".join(kept)
    return ", ".join(["private", *kept])


class ResponseHeaders(Step):
    """Mark responses as depending on the user (``Vary``) or as private."""

    vary: tuple[Literal["Authorization", "Cookie"], ...] = Field(
        ("Authorization",), description="Request headers the response depends on"
    )
    cache: Literal["vary", "private"] = Field(
        "vary", description="'private' for caches that ignore Vary"
    )

    @cached_property
    def _vary(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.vary))

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        merge_vary(response.headers, *self._vary)
        if self.cache == "private":
            cache_control = response.headers.get(hdrs.CACHE_CONTROL, "")
            response.headers[hdrs.CACHE_CONTROL] = _private(cache_control)
        return response
