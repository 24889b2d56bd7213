"""Extra cache marking beyond what every endpoint already does.

Every endpoint marks its responses ``Vary`` on the headers its authenticators name, or
``private`` (see :mod:`electric_proxy.caching`), so this step is never needed for safety.
It remains for deployments that want more: ``Vary`` on a further header the app tells
users apart by, or ``private`` for one route whose endpoint is configured ``vary``.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from aiohttp import web
from pydantic import Field

from ..caching import make_private, merge_vary
from ..chain import Step

__all__ = ["ResponseHeaders"]


class ResponseHeaders(Step):
    """Mark responses as depending on further request headers (``Vary``), or as private."""

    vary: tuple[Literal["Authorization", "Cookie"], ...] = Field(
        ("Authorization",), description="Request headers the response depends on"
    )
    cache: Literal["vary", "private"] = Field(
        "vary", description="'private' for caches that ignore Vary"
    )

    @cached_property
    def _vary(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.vary))

    def identity_headers(self) -> tuple[str, ...]:
        return self._vary

    def on_response(self, request: web.Request, response: web.StreamResponse) -> None:
        merge_vary(response.headers, *self._vary)
        if self.cache == "private":
            make_private(response.headers)
