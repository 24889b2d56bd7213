"""The gatekeeper's verifier step: a valid token for exactly the shape the client asks for.

See :mod:`electric_proxy.steps.gatekeeper` for the pattern. Token checks are
:class:`~electric_proxy.steps.jwt.JwtAuth`'s and the authenticator protocol is
:class:`~electric_proxy.Authenticator`'s; what is the gatekeeper's own is only
:meth:`GatekeeperVerifier.authorize`: the claim against the request.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from pydantic import Field, ValidationError

from ...chain import Principal, client_query
from ...errors import Forbidden, Unauthorized
from ...keys import UPSTREAM
from ..jwt import JwtAuth
from .claim import ShapeClaim

__all__ = ["GatekeeperVerifier"]


class GatekeeperVerifier(JwtAuth):
    """Accept a shape request only with a token whose ``shape`` claim is exactly that shape.

    Replaces both the authenticator and the policy in a chain (keep ``credentials`` after
    it). Options are :class:`~electric_proxy.steps.jwt.JwtAuth`'s plus ``shape_claim``.
    Like ``JwtAuth`` it records the token's expiry (``CREDENTIAL_EXPIRES``), so a live
    request held on a short-lived gatekeeper token ends when the token does.
    """

    shape_claim: str = Field("shape", min_length=1, description="The claim holding the shape")

    def _required(self) -> tuple[str, ...]:
        return (*super()._required(), self.shape_claim)

    async def authorize(self, request: web.Request, principal: Principal) -> None:
        """The shape asked for must be the token's, parameter by parameter; then the upstream
        shape is set from the token, whatever the client sent."""
        try:
            shape = ShapeClaim.model_validate(principal.claims[self.shape_claim])
        except ValidationError:
            raise Unauthorized(f"the token's {self.shape_claim!r} claim is malformed") from None
        query = client_query(request)
        if request.method == hdrs.METH_POST or any(k.startswith("subset__") for k in query):
            raise Forbidden(
                "subset snapshots are not covered by a gatekeeper token",
                code="subsets_not_allowed",
            )
        differing = shape.mismatch(query)
        if differing is not None:
            raise Forbidden(
                f"the token grants another shape ({differing} differs)",
                code="shape_not_allowed",
                details={"parameter": differing},
            )
        built = request[UPSTREAM].query
        for key, value in shape.upstream_params():
            built[key] = value
