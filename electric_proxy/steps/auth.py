"""The authenticator protocol: the one method an org-specific auth plugin has to write.

Subclass :class:`Authenticator` and implement ``authenticate``; return a
:class:`~electric_proxy.Principal`, return ``None`` when the request carries no
credentials of this kind, or raise :class:`~electric_proxy.Unauthorized` when it carries
bad ones. The base class does the rest the same way for every scheme: preflights pass
(browsers never send credentials on them, and the endpoint answers them locally), a
missing principal is a 401 with ``WWW-Authenticate``, ``authorize`` may refuse it, and the
principal is stored under :data:`~electric_proxy.PRINCIPAL` for the policy.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence

from aiohttp import hdrs, web

from ..chain import Principal, Step
from ..errors import Unauthorized
from ..keys import PRINCIPAL

__all__ = ["B64TOKEN", "Authenticator", "bearer_token"]

#: RFC 6750 §2.1 ``b64token``: what a bearer token may be made of. Anything else (a byte
#: that is not UTF-8, a control character, a space) is refused before any step hashes,
#: decodes or compares it, so no authenticator has to handle it.
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header (RFC 6750 §2.1), if there is one."""
    value = request.headers.get(hdrs.AUTHORIZATION)
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header is not a bearer token", code="invalid_request")
    token = token.strip()
    if B64TOKEN.fullmatch(token) is None:
        raise Unauthorized("the bearer token is not RFC 6750 token68", code="invalid_request")
    return token


class Authenticator(Step):
    authenticates = True

    def identity_headers(self) -> Sequence[str] | None:
        """``None``: users are told apart by means the endpoint cannot name, so it marks
        every response ``private``. Override with the headers read (``("X-Api-Key",)``) to
        let shared caches keep one entry per user instead."""
        return None

    @abc.abstractmethod
    async def authenticate(self, request: web.Request) -> Principal | None:
        """Who sent this request; ``None`` when it carries no credentials at all."""

    async def authorize(self, request: web.Request, principal: Principal) -> None:
        """What the credentials themselves allow, checked before the principal is stored.

        Most schemes only say who is asking and leave the rest to a policy: nothing here. A
        scheme whose token also carries the permission (the gatekeeper's signed shape)
        overrides it to raise :class:`~electric_proxy.Forbidden` or to edit the upstream
        request, and inherits the rest of the protocol above unchanged.
        """

    async def on_request(self, request: web.Request) -> None:
        if request.method == hdrs.METH_OPTIONS:
            return
        principal = await self.authenticate(request)
        if principal is None:
            raise Unauthorized("authentication required", code="missing_token")
        await self.authorize(request, principal)
        request[PRINCIPAL] = principal
