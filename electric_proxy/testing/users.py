"""The standard users of the two-tenant stand-in: Alice of ``acme``, Bob of ``globex``."""

from __future__ import annotations

from ..steps.bearer import BearerAuth, StaticToken

__all__ = ["ALICE", "BOB", "auth", "two_users"]

ALICE = "token-alice-acme-0000001"
BOB = "token-bob-globex-0000002"


def auth(token: str) -> dict[str, str]:
    """The ``Authorization`` header that presents ``token``."""
    return {"Authorization": f"Bearer {token}"}


def two_users() -> BearerAuth:
    """Bearer auth knowing :data:`ALICE` (``sub`` alice, ``org_id`` acme) and :data:`BOB`
    (``sub`` bob, ``org_id`` globex), the claims a ``where = "org_id = :org_id"`` binds."""
    return BearerAuth(
        tokens=[
            StaticToken(token=ALICE, sub="alice", claims={"org_id": "acme"}),
            StaticToken(token=BOB, sub="bob", claims={"org_id": "globex"}),
        ]
    )
