"""When the identity provider's keys cannot be had: fail closed, say so, count it."""

from __future__ import annotations

from typing import Any

import pytest
from test_jwks import IdentityProvider, idp, jwt_auth  # noqa: F401  (idp is a fixture)
from test_jwt import EC, RSA, RSA_OTHER, bearer, chain, claims, public_pem, refused, sign

from electric_proxy import JwtAuth
from electric_proxy.testing import RunningUpstream


async def test_reject_is_the_default_and_is_counted(
    proxy_client: Any,
    electric_upstream: RunningUpstream,
    idp: IdentityProvider,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth = jwt_auth(idp, jwks_retry_interval=30)
    assert auth.when_unavailable == "reject"
    client = await proxy_client(chain(electric_upstream, auth))
    await idp.go_away()
    token = sign(claims(), RSA, "RS256", kid=RSA.kid)
    await refused(client, electric_upstream, token, caplog, status=503, code="service_unavailable")
    assert auth.outages == {"rejected": 1, "fallback_keys": 0}


async def test_fallback_keys_verify_while_the_provider_is_down(
    proxy_client: Any,
    electric_upstream: RunningUpstream,
    idp: IdentityProvider,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth = jwt_auth(
        idp,
        jwks_retry_interval=30,
        when_unavailable="fallback_keys",
        jwks_fallback_keys=[public_pem(RSA)],
    )
    client = await proxy_client(chain(electric_upstream, auth))
    await idp.go_away()
    good = sign(claims(), RSA, "RS256", kid=RSA.kid)
    resp = await client.get("/v1/shape?offset=-1", headers=bearer(good))
    assert resp.status == 200
    # Still a verification, as strict as `public_keys`: another key, a forgery, an expired
    # token are all refused.
    electric_upstream.electric.requests.clear()
    await refused(client, electric_upstream, sign(claims(), RSA_OTHER, "RS256"), caplog)
    await refused(
        client,
        electric_upstream,
        sign(claims(exp=1), RSA, "RS256", kid=RSA.kid),
        caplog,
        code="expired_token",
    )
    assert auth.outages == {"rejected": 0, "fallback_keys": 3}


async def test_fallback_keys_are_not_used_once_the_provider_answered(
    proxy_client: Any,
    electric_upstream: RunningUpstream,
    idp: IdentityProvider,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth = jwt_auth(
        idp, when_unavailable="fallback_keys", jwks_fallback_keys=[public_pem(RSA_OTHER)]
    )
    client = await proxy_client(chain(electric_upstream, auth))
    assert (
        await client.get(
            "/v1/shape?offset=-1", headers=bearer(sign(claims(), RSA, "RS256", kid=RSA.kid))
        )
    ).status == 200
    # The provider's keys are known; a token from the pinned key is now an unknown key.
    electric_upstream.electric.requests.clear()
    await refused(client, electric_upstream, sign(claims(), RSA_OTHER, "RS256"), caplog)
    assert auth.outages == {"rejected": 0, "fallback_keys": 0}


async def test_readiness_loads_the_keys(idp: IdentityProvider) -> None:  # noqa: F811
    auth = jwt_auth(idp)
    assert auth.jwks is not None
    await auth.jwks.open()
    try:
        assert await auth.ready() is None
        assert idp.hits == 1 and len(auth.jwks.keys) == 1
        assert await auth.ready() is None
        assert idp.hits == 1
    finally:
        await auth.jwks.close()


async def test_not_ready_while_the_keys_cannot_be_fetched(
    idp: IdentityProvider,  # noqa: F811
) -> None:
    idp.status = 500
    auth = jwt_auth(idp, jwks_retry_interval=30)
    assert auth.jwks is not None
    await auth.jwks.open()
    try:
        problem = await auth.ready()
        assert problem is not None and "signing keys" in problem
        assert idp.url not in problem
        await auth.ready()
        assert idp.hits == 1  # a readiness probe is rate-limited like any other fetch
    finally:
        await auth.jwks.close()


def test_steps_without_a_jwks_url_are_always_ready() -> None:
    import asyncio

    auth = JwtAuth(algorithms=["ES256"], public_keys=[public_pem(EC)])
    assert asyncio.run(auth.ready()) is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"when_unavailable": "fallback_keys"}, "needs `jwks_url` and `jwks_fallback_keys`"),
        ({"jwks_fallback_keys": [public_pem(RSA)]}, "only used with when_unavailable"),
        ({"when_unavailable": "allow"}, "Input should be 'reject' or 'fallback_keys'"),
        (
            {"when_unavailable": "fallback_keys", "jwks_fallback_keys": [public_pem(EC)]},
            "jwks_fallback_keys[0] fits none",
        ),
    ],
)
def test_outage_options_are_checked_at_start_up(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        JwtAuth(
            algorithms=["RS256"], jwks_url="https://idp.example/.well-known/jwks.json", **options
        )


def test_fallback_needs_a_jwks_url() -> None:
    with pytest.raises(ValueError, match="needs `jwks_url`"):
        JwtAuth(
            algorithms=["RS256"],
            public_keys=[public_pem(RSA)],
            when_unavailable="fallback_keys",
            jwks_fallback_keys=[public_pem(RSA)],
        )
