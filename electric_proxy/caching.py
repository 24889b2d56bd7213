"""Shared caches must never hand one user's rows to another: responses say whom they vary by.

Electric marks shape responses ``public`` (the initial one for a week, an hour in shared
caches) because it cannot know that behind this proxy they depend on who asked. The
endpoint, not an optional step, corrects that after the chain for every response:

* ``Vary`` on the request headers the chain's authenticators name (``Authorization``,
  ``Cookie``, a plugin's own header). Caches that honour ``Vary`` (browsers, nginx, Varnish,
  most CDNs) then keep one entry per user and still serve a user's repeats from cache.
* ``private`` (``Cache-Control`` rewritten, ``s-maxage`` dropped) when the deployment asks
  for it, for caches that ignore ``Vary``, and always when a step identifies users by means
  it does not name, since no ``Vary`` could describe them.

The one way out is :data:`SAME_FOR_EVERYONE`, which a policy sets for a shape configured
``public = true`` (refused when its filter binds claims): those responses are left as
Electric made them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from aiohttp import hdrs, web
from multidict import CIMultiDict

from .keys import SAME_FOR_EVERYONE

__all__ = ["CacheMode", "CacheScope", "make_private", "merge_vary"]

CacheMode = Literal["vary", "private"]

_ACCEPT_ENCODING = "Accept-Encoding"


def merge_vary(headers: CIMultiDict[str], *names: str) -> None:
    """Add ``names`` to ``Vary`` once each, keeping what is there; ``*`` absorbs everything."""
    merged = _merged_vary(tuple(headers.getall(hdrs.VARY, ())), names)
    if merged:
        headers[hdrs.VARY] = merged


# Responses of one endpoint carry the same few Vary values, so each combination is worked
# out once; bounded, since the upstream's part is not the proxy's to trust.
@functools.lru_cache(maxsize=256)
def _merged_vary(values: tuple[str, ...], names: tuple[str, ...]) -> str:
    """The one ``Vary`` value for the header's ``values`` with ``names`` added ("": none)."""
    present = [v.strip() for value in values for v in value.split(",")]
    present = [v for v in present if v]
    if "*" in present:
        return "*"
    known = {v.lower() for v in present}
    merged = present
    for name in names:
        if name.lower() not in known:
            known.add(name.lower())
            merged.append(name)
    return ", ".join(merged)


def make_private(headers: CIMultiDict[str]) -> None:
    """Rewrite ``Cache-Control`` so that only the user's own browser may store the response."""
    directives = [d.strip() for d in headers.get(hdrs.CACHE_CONTROL, "").split(",")]
    kept = [
        d
        for d in directives
        if d and d.lower() not in ("public", "private") and not d.lower().startswith("s-maxage")
    ]
    if not any(d.lower() == "no-store" for d in kept):
        kept.insert(0, "private")
    headers[hdrs.CACHE_CONTROL] = ", ".join(kept)


@dataclass(frozen=True, slots=True)
class CacheScope:
    """How one endpoint marks its responses, decided once from its chain and its setting."""

    vary: tuple[str, ...]
    private: bool

    @classmethod
    def of(cls, declared: Iterable[Sequence[str] | None], mode: CacheMode) -> CacheScope:
        """``declared`` holds each step's :meth:`~electric_proxy.Step.identity_headers`."""
        names: dict[str, str] = {}
        unnamed = False
        for headers in declared:
            if headers is None:
                unnamed = True
                continue
            for name in headers:
                names.setdefault(name.lower(), name)
        return cls(vary=tuple(names.values()), private=mode == "private" or unnamed)

    def mark(self, request: web.Request, response: web.StreamResponse, identified: bool) -> None:
        """Mark ``response``; ``identified`` says whether the chain set a principal."""
        if request.get(SAME_FOR_EVERYONE, False):
            return
        if self.vary:
            canonical_vary(response.headers, *self.vary)
        if self.private or (identified and not self.vary):
            make_private(response.headers)


def canonical_vary(headers: CIMultiDict[str], *names: str) -> None:
    """``Vary`` with ``names``, ``Accept-Encoding`` and whatever is there, in one fixed order.

    Every answer on one URL must name the same headers in the same order: nginx keeps one
    ``Vary`` list per URL and compares lists as written, so a gzipped 200 that says
    ``accept-encoding, Authorization`` and a 409 that says ``Authorization`` would evict each
    other's variants. ``Accept-Encoding`` is always named because the proxy forwards it.
    """
    headers[hdrs.VARY] = _canonical_vary(tuple(headers.getall(hdrs.VARY, ())), names)


@functools.lru_cache(maxsize=256)
def _canonical_vary(values: tuple[str, ...], names: tuple[str, ...]) -> str:
    present = _merged_vary(values, (_ACCEPT_ENCODING, *names))
    if present == "*":
        return present
    canonical: dict[str, str] = {}
    for name in (_ACCEPT_ENCODING, *names, *(v.strip() for v in present.split(","))):
        canonical.setdefault(name.lower(), name)  # the proxy's spelling first
    return ", ".join(canonical[k] for k in sorted(canonical))
