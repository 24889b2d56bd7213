"""Inject Electric's credentials into the upstream request; the client never sees them.

Client-sent ``secret``, ``api_secret``, ``source_secret`` and ``source_id`` never get
through: the forwarder copies only protocol parameters, so they are dropped silently
(a 400 would tell a prober which names matter, and honest clients never send them).
"""

from __future__ import annotations

from typing import Literal

from aiohttp import hdrs, web
from pydantic import Field, SecretStr

from ..chain import Step
from ..keys import UPSTREAM

__all__ = ["Credentials"]


class Credentials(Step):
    """Self-hosted: ``secret``. Cloud Sync: ``source_id`` + ``secret``. Streams: ``bearer``."""

    secret: SecretStr | None = Field(None, description="Use {$env=...} or {$file=...}")
    source_id: SecretStr | None = Field(None, description="Electric Cloud source id")
    secret_param: Literal["secret", "api_secret", "source_secret"] = Field(
        "secret", description="`api_secret` for old servers, `source_secret` for old Cloud docs"
    )
    bearer: SecretStr | None = Field(
        None, description="Sent as `Authorization: Bearer` (Electric Streams service secret)"
    )

    async def on_request(self, request: web.Request) -> None:
        query = request[UPSTREAM].query
        if self.source_id is not None:
            query["source_id"] = self.source_id.get_secret_value()
        if self.secret is not None:
            query[self.secret_param] = self.secret.get_secret_value()
        if self.bearer is not None:
            request[UPSTREAM].headers[hdrs.AUTHORIZATION] = (
                f"Bearer {self.bearer.get_secret_value()}"
            )
