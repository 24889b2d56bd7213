"""JWT authentication on real sockets: every refusal is a 401 that never reaches Electric.

The helpers at the top (keys, ``sign``, ``forge``, ``refused``) are shared with the JWKS and
gatekeeper tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey
from pydantic import ValidationError

from electric_proxy import PRINCIPAL, Credentials, Principal, ShapePolicy
from electric_proxy.steps.jwt import ConfiguredAlgorithms, JwtAuth, import_public_key
from electric_proxy.testing import RunningUpstream

HS_SECRET = "hs-secret-for-the-tests-0123456789abcdef-0123456789abcdef"
RSA = RSAKey.generate_key(2048, auto_kid=True)
RSA_OTHER = RSAKey.generate_key(2048, auto_kid=True)
EC = ECKey.generate_key("P-256", auto_kid=True)
ED = OKPKey.generate_key("Ed25519", auto_kid=True)


def public_pem(key: RSAKey | ECKey | OKPKey) -> str:
    return key.as_pem(private=False).decode()


def claims(**changes: Any) -> dict[str, Any]:
    """Alice at acme, valid for five minutes; a change of ``None`` removes the claim."""
    now = int(time.time())
    base: dict[str, Any] = {"sub": "alice", "org_id": "acme", "iat": now, "exp": now + 300}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(
    payload: dict[str, Any], key: Key, alg: str, *, kid: str | None = None, **header: Any
) -> str:
    protected: dict[str, Any] = {"alg": alg, "typ": "JWT", **header}
    if kid is not None:
        protected["kid"] = kid
    return jws.serialize_compact(
        protected, json.dumps(payload), key, registry=ConfiguredAlgorithms(algorithms=[alg])
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token an attacker assembles by hand (``alg: none``, a confused key, ...)."""
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)]
    )


def forge_hmac(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def chain(upstream: RunningUpstream, auth: Any) -> list[Any]:
    return [
        auth,
        ShapePolicy(shapes={"todos": {"where": "org_id = :org_id"}}),
        Credentials(secret=upstream.secret),
    ]


async def refused(
    client: Any,
    upstream: RunningUpstream,
    token: str,
    caplog: pytest.LogCaptureFixture,
    *,
    status: int = 401,
    code: str = "invalid_token",
) -> dict[str, Any]:
    """Send ``token``; assert the refusal, that nothing reached Electric, and no token leak."""
    caplog.set_level(logging.DEBUG)
    resp = await client.get("/v1/shape?offset=-1", headers=bearer(token))
    text = await resp.text()
    assert resp.status == status, text
    body = json.loads(text)
    assert body["error"] == code
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
        assert f'error="{code}"' in resp.headers["WWW-Authenticate"]
    assert upstream.electric.requests == []
    for part in token.split("."):
        if len(part) > 8:
            assert part not in text
            assert part not in caplog.text
    return body


# --- accepted tokens --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "signing_key", "options"),
    [
        ("HS256", None, {"secret": HS_SECRET}),
        ("HS384", None, {"secret": HS_SECRET}),
        ("HS512", None, {"secret": HS_SECRET + HS_SECRET}),
        ("RS256", RSA, {"public_keys": [public_pem(RSA)]}),
        ("ES256", EC, {"public_keys": [public_pem(EC)]}),
        ("EdDSA", ED, {"public_keys": [public_pem(ED)]}),
        ("Ed25519", ED, {"public_keys": [json.dumps(ED.as_dict(private=False))]}),
    ],
)
async def test_each_algorithm_authenticates(
    proxy_client: Any,
    electric_upstream: RunningUpstream,
    alg: str,
    signing_key: Key | None,
    options: dict[str, Any],
) -> None:
    auth = JwtAuth(algorithms=[alg], **options)
    client = await proxy_client(chain(electric_upstream, auth))
    key = OctKey.import_key(options["secret"]) if signing_key is None else signing_key
    resp = await client.get("/v1/shape?offset=-1", headers=bearer(sign(claims(), key, alg)))
    assert resp.status == 200, await resp.text()
    rows = [m["value"] for m in await resp.json() if "value" in m]
    assert rows and {r["org_id"] for r in rows} == {"acme"}
    assert electric_upstream.electric.requests[-1].query["params[1]"] == "acme"
    assert "Authorization" not in electric_upstream.electric.requests[-1].headers


async def test_principal_uses_the_subject_claim(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    seen: list[Principal] = []

    async def capture(request: Any, handler: Any) -> Any:
        seen.append(request[PRINCIPAL])
        return await handler(request)

    auth = JwtAuth(
        algorithms=["ES256"],
        public_keys=[public_pem(EC)],
        subject_claim="email",
        required_claims=["exp"],
    )
    client = await proxy_client([auth, capture, *chain(electric_upstream, auth)[1:]])
    token = sign(claims(sub=None, email="alice@acme.example"), EC, "ES256")
    assert (await client.get("/v1/shape?offset=-1", headers=bearer(token))).status == 200
    assert seen[0].id == "alice@acme.example"
    assert seen[0].claims["org_id"] == "acme"


async def test_leeway_absorbs_clock_skew(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    auth = JwtAuth(algorithms=["HS256"], secret=HS_SECRET, leeway=30)
    client = await proxy_client(chain(electric_upstream, auth))
    key = OctKey.import_key(HS_SECRET)
    now = int(time.time())
    for payload in (claims(exp=now - 10), claims(nbf=now + 10), claims(iat=now + 10)):
        resp = await client.get("/v1/shape?offset=-1", headers=bearer(sign(payload, key, "HS256")))
        assert resp.status == 200, payload


async def test_preflight_needs_no_token(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    client = await proxy_client(
        chain(electric_upstream, JwtAuth(algorithms=["HS256"], secret=HS_SECRET))
    )
    assert (await client.options("/v1/shape")).status == 204


# --- refused tokens ---------------------------------------------------------------------------


@pytest.fixture
async def rs_client(proxy_client: Any, electric_upstream: RunningUpstream) -> Any:
    auth = JwtAuth(
        algorithms=["RS256"],
        public_keys=[public_pem(RSA)],
        issuer="https://idp.example/",
        audience="electric",
        leeway=5,
        required_claims=["sub", "exp", "org_id"],
    )
    return await proxy_client(chain(electric_upstream, auth))


def good(**changes: Any) -> dict[str, Any]:
    return claims(**{"iss": "https://idp.example/", "aud": "electric", **changes})


async def test_a_valid_token_passes(rs_client: Any, electric_upstream: RunningUpstream) -> None:
    resp = await rs_client.get("/v1/shape?offset=-1", headers=bearer(sign(good(), RSA, "RS256")))
    assert resp.status == 200
    listed = good(aud=["other", "electric"])
    resp = await rs_client.get("/v1/shape?offset=-1", headers=bearer(sign(listed, RSA, "RS256")))
    assert resp.status == 200


@pytest.mark.parametrize(
    ("payload", "code", "message"),
    [
        (lambda now: good(exp=now - 60), "expired_token", "expired"),
        (lambda now: good(nbf=now + 60), "invalid_token", "not valid yet"),
        (lambda now: good(iat=now + 60), "invalid_token", "future"),
        (lambda now: good(aud="someone-else"), "invalid_token", "'aud'"),
        (lambda now: good(aud=["a", "b"]), "invalid_token", "'aud'"),
        (lambda now: good(aud=None), "invalid_token", "aud"),
        (lambda now: good(iss="https://evil.example/"), "invalid_token", "'iss'"),
        (lambda now: good(iss=None), "invalid_token", "iss"),
        (lambda now: good(exp=None), "invalid_token", "exp"),
        (lambda now: good(org_id=None), "invalid_token", "org_id"),
        (lambda now: good(sub=42), "invalid_token", "sub"),
        (lambda now: good(exp="tomorrow"), "invalid_token", "exp"),
    ],
    ids=[
        "expired",
        "not-yet-valid",
        "issued-in-future",
        "wrong-audience",
        "audience-list-without-us",
        "no-audience",
        "wrong-issuer",
        "no-issuer",
        "no-exp",
        "missing-required-claim",
        "non-string-sub",
        "exp-not-a-number",
    ],
)
async def test_claims_are_checked(
    rs_client: Any,
    electric_upstream: RunningUpstream,
    caplog: pytest.LogCaptureFixture,
    payload: Any,
    code: str,
    message: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = sign(payload(int(time.time())), RSA, "RS256")
    body = await refused(rs_client, electric_upstream, token, caplog, code=code)
    assert message in body["message"]


async def test_hmac_with_the_public_key_as_secret_is_refused(
    rs_client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """The classic algorithm confusion: the attacker knows the public key, so signs with it."""
    pem = public_pem(RSA).encode()
    header = {"alg": "HS256", "typ": "JWT", "kid": RSA.kid}
    token = forge_hmac(header, good(), pem)
    body = await refused(rs_client, electric_upstream, token, caplog)
    assert "algorithm" in body["message"]


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
async def test_alg_none_is_refused(
    rs_client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture, alg: str
) -> None:
    token = forge({"alg": alg, "typ": "JWT"}, good())
    await refused(rs_client, electric_upstream, token, caplog)


async def test_an_algorithm_not_configured_is_refused(
    rs_client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    await refused(rs_client, electric_upstream, sign(good(), EC, "ES256"), caplog)


async def test_tampering_is_refused(
    rs_client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    token = sign(good(), RSA, "RS256")
    header, payload, signature = token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    body = await refused(rs_client, electric_upstream, f"{header}.{payload}.{flipped}", caplog)
    assert "signature" in body["message"]

    other_org = b64(json.dumps(good(org_id="globex")).encode())
    await refused(rs_client, electric_upstream, f"{header}.{other_org}.{signature}", caplog)


async def test_a_key_other_than_the_configured_one_is_refused(
    rs_client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    await refused(rs_client, electric_upstream, sign(good(), RSA_OTHER, "RS256"), caplog)


async def test_keys_embedded_in_the_token_are_never_used(
    rs_client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    attacker = RSA_OTHER.as_dict(private=False)
    token = sign(good(), RSA_OTHER, "RS256", jwk=attacker, kid=RSA.kid)
    await refused(rs_client, electric_upstream, token, caplog)


@pytest.mark.parametrize(
    "token",
    ["not-a-jwt", "a.b", "a.b.c", "a.b.c.d.e", "e30.e30.", "....", "ey" * 600],
)
async def test_malformed_tokens_are_refused(
    rs_client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture, token: str
) -> None:
    await refused(rs_client, electric_upstream, token, caplog)


async def test_claims_that_are_not_an_object_are_refused(
    rs_client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    header = {"alg": "RS256", "typ": "JWT"}
    token = jws.serialize_compact(header, b"[1, 2]", RSA, algorithms=["RS256"])
    await refused(rs_client, electric_upstream, token, caplog)


async def test_no_token_is_missing_token(
    rs_client: Any, electric_upstream: RunningUpstream
) -> None:
    resp = await rs_client.get("/v1/shape?offset=-1")
    assert resp.status == 401
    assert (await resp.json())["error"] == "missing_token"
    assert electric_upstream.electric.requests == []


# --- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"algorithms": []}, "at least 1"),
        ({"algorithms": ["none"], "secret": HS_SECRET}, "algorithms"),
        ({"algorithms": ["HS256", "RS256"], "secret": HS_SECRET}, "cannot be mixed"),
        ({"algorithms": ["HS256", "HS256"], "secret": HS_SECRET}, "twice"),
        ({"algorithms": ["HS256"]}, "exactly one"),
        ({"algorithms": ["HS256"], "secret": HS_SECRET, "jwks_url": "https://x/"}, "exactly one"),
        ({"algorithms": ["HS256"], "secret": "short"}, "at least 32 bytes"),
        ({"algorithms": ["HS512"], "secret": HS_SECRET[:40]}, "at least 64 bytes"),
        ({"algorithms": ["RS256"], "secret": HS_SECRET}, "HS256/HS384/HS512 only"),
        ({"algorithms": ["HS256"], "public_keys": [public_pem(RSA)]}, "need `secret`"),
        ({"algorithms": ["RS256"], "public_keys": ["garbage"]}, "not a PEM"),
        (
            {"algorithms": ["RS256"], "public_keys": [RSA.as_pem(private=True).decode()]},
            "private key",
        ),
        ({"algorithms": ["RS256"], "public_keys": ['{"kty": "oct", "k": "c2VjcmV0"}']}, "secret"),
        ({"algorithms": ["RS256"], "public_keys": [public_pem(EC)]}, "fits none"),
        ({"algorithms": ["RS256"], "jwks_url": "http://idp.example/jwks"}, "must be https"),
        ({"algorithms": ["RS256"], "jwks_url": "ftp://idp.example/jwks"}, "http(s)"),
        ({"algorithms": ["RS256"], "jwks_url": "https://u:p@idp.example/jwks"}, "credentials"),
        ({"algorithms": ["HS256"], "secret": HS_SECRET, "leeway": -1}, "greater than or equal"),
        ({"algorithms": ["HS256"], "secret": HS_SECRET, "unknown": 1}, "Extra inputs"),
    ],
)
def test_bad_options_fail_at_start_up(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        JwtAuth.model_validate(options)
    assert message in str(info.value)


def test_jwks_over_http_is_allowed_on_loopback_or_when_accepted() -> None:
    JwtAuth(algorithms=["RS256"], jwks_url="http://127.0.0.1:9/jwks")
    JwtAuth(algorithms=["RS256"], jwks_url="http://localhost:9/jwks")
    JwtAuth(algorithms=["RS256"], jwks_url="http://idp:8080/jwks", jwks_allow_http=True)


def test_the_secret_never_prints() -> None:
    auth = JwtAuth(algorithms=["HS256"], secret=HS_SECRET)
    assert HS_SECRET not in repr(auth)
    assert HS_SECRET not in json.dumps(auth.model_dump(mode="json"))


def test_public_keys_accept_pem_and_jwk() -> None:
    assert import_public_key(public_pem(RSA)).key_type == "RSA"
    assert import_public_key(json.dumps(EC.as_dict(private=False))).key_type == "EC"
    assert import_public_key(public_pem(ED)).key_type == "OKP"
    with pytest.raises(ValueError, match="JSON"):
        import_public_key("{not json")


async def test_a_header_nested_thousands_deep_is_a_401_not_a_crash(rs_client: Any) -> None:
    """joserfc refuses headers over 512 bytes before parsing them: JSON nesting cannot crash."""

    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = b'{"alg":"RS256","x":' + b"[" * 2500 + b"]" * 2500 + b"}"
    token = f"{part(header)}.{part(b'{}')}.{part(b'sig')}"
    resp = await rs_client.get("/v1/shape?offset=-1", headers=bearer(token))
    assert resp.status == 401
    assert (await resp.json())["error"] == "invalid_token"
