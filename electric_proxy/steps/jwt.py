"""JSON Web Token authentication (RFC 7519), verified with joserfc.

``Authorization: Bearer <jwt>`` becomes ``Principal(id=claims[subject_claim], claims)``,
so a policy can bind any claim (``org_id``, ``tenant.id``) into the shape's ``params[n]``::

    JwtAuth(algorithms=["RS256"], jwks_url="https://idp.example/.well-known/jwks.json",
            issuer="https://idp.example/", audience="electric")

What it refuses, and why:

* **Algorithms other than the configured ones**, checked against the token header before
  any key is looked up. ``none`` cannot be configured, and one step cannot mix HMAC with
  public-key algorithms: otherwise a token signed with HS256 using the *public* RSA key as
  the HMAC secret would verify (algorithm confusion). Keys are also matched to the
  algorithm by type and curve, so even a misconfigured key list cannot be confused.
* **Keys named by the token** (``jwk``, ``jku``, ``x5u`` headers) are never used; keys come
  from the config or from the configured JWKS URL only.
* **Time claims** ``exp``, ``nbf`` and ``iat`` are checked with ``leeway`` seconds of clock
  skew; ``iss`` and ``aud`` must match when configured; ``required_claims`` must be present.
  Claims are only read after the signature is verified.

Errors are 401 with ``WWW-Authenticate: Bearer`` and ``invalid_token`` (``expired_token``
for an expired one). When the identity provider's keys cannot be had at all (no key was
ever fetched), the step fails closed: ``when_unavailable = "reject"`` (the default) answers
503 with ``Retry-After``; ``"fallback_keys"`` verifies with keys pinned in the config
instead, which is as strict as ``public_keys``. No option lets an unverified token through.
No message, log line or error body ever contains the token.

:class:`TokenVerifier` is the one verification path; the gatekeeper's verifier step
(:mod:`electric_proxy.steps.gatekeeper`) subclasses :class:`JwtAuth` to reuse it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal, Protocol, cast

from aiohttp import hdrs, web
from joserfc import jws
from joserfc.errors import (
    ClaimError,
    ExpiredTokenError,
    JoseError,
    MissingClaimError,
    UnsupportedAlgorithmError,
)
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import DictKey, JWKRegistry, Key, OctKey
from joserfc.jws import JWSRegistry
from joserfc.jwt import ClaimsOption, JWTClaimsRegistry
from pydantic import Field, PrivateAttr, SecretStr, field_validator
from yarl import URL

from ..chain import Principal, StepMetric
from ..errors import ServiceUnavailable, Unauthorized
from ..keys import CREDENTIAL_EXPIRES
from .auth import Authenticator, bearer_token
from .jwks import JwksCache, key_fits

__all__ = ["HMAC_ALGORITHMS", "ConfiguredAlgorithms", "JwtAuth", "import_public_key"]

log = logging.getLogger("electric_proxy.jwt")

Algorithm = Literal["HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA", "Ed25519"]

#: HMAC algorithms and the least secret length each allows (RFC 7518 §3.2: no shorter
#: than the hash output).
HMAC_ALGORITHMS: dict[str, int] = {"HS256": 32, "HS384": 48, "HS512": 64}


class KeySource(Protocol):
    async def keys_for(self, kid: str | None, alg: str) -> Sequence[Key]:
        """Keys that may have signed a token with this header; empty when none is known."""
        ...


class StaticKeys:
    """Keys from the config. A key without a ``kid`` may verify any token of its type."""

    def __init__(self, keys: Sequence[Key]) -> None:
        self.keys = tuple(keys)

    async def keys_for(self, kid: str | None, alg: str) -> Sequence[Key]:
        return [
            k
            for k in self.keys
            if (kid is None or k.kid is None or k.kid == kid) and key_fits(k, alg)
        ]


class ConfiguredAlgorithms(JWSRegistry):
    """Exactly the configured algorithms, whatever joserfc would recommend or warn about.

    joserfc warns on every use of ``EdDSA`` (RFC 9864 prefers ``Ed25519``); that is a
    deployment decision made once in the config, not something to repeat per request.
    """

    def get_alg(self, name: str) -> JWSAlgModel:
        if not self.allowed or name not in self.allowed or name not in self.algorithms:
            raise UnsupportedAlgorithmError(f"algorithm {name!r} is not accepted")
        return self.algorithms[name]


class JwksKeys:
    """Keys from a JWKS cache, and what to do while it has none at all.

    ``fallback`` (pinned keys from the config) verifies tokens only in that case; without it
    the cache's 503 stands. ``outages`` counts both outcomes for metrics.
    """

    def __init__(
        self, cache: JwksCache, fallback: StaticKeys | None, outages: dict[str, int]
    ) -> None:
        self.cache = cache
        self.fallback = fallback
        self.outages = outages

    async def keys_for(self, kid: str | None, alg: str) -> Sequence[Key]:
        try:
            return await self.cache.keys_for(kid, alg)
        except ServiceUnavailable:
            fallback = self.fallback
            if fallback is None:
                self.outages["rejected"] += 1
                raise
        self.outages["fallback_keys"] += 1
        return await fallback.keys_for(kid, alg)


def import_public_key(text: str) -> Key:
    """A verification key from a PEM (or OpenSSH) public key or a JWK in JSON.

    Private keys and symmetric JWKs are refused: the first do not belong in a proxy's
    config, the second belong in ``secret``, where they cannot meet an asymmetric algorithm.
    """
    stripped = text.strip()
    key: Key | None = None
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            raise ValueError("not valid JSON for a JWK") from None
        if not isinstance(data, dict):
            raise ValueError("a JWK must be a JSON object")
        if data.get("kty") == "oct":
            raise ValueError("a symmetric key belongs in `secret`, not `public_keys`")
        try:
            key = JWKRegistry.import_key(cast(DictKey, data))
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"not a usable JWK: {exc}") from None
    else:
        for key_type in ("RSA", "EC", "OKP"):
            try:
                key = JWKRegistry.import_key(stripped, key_type)
                break
            except (JoseError, ValueError, TypeError):
                continue
        if key is None:
            raise ValueError("not a PEM public key (RSA, EC or Ed25519) nor a JWK")
    if key.is_private:
        raise ValueError("this is a private key; give the proxy the public key only")
    return key


def _claims_options(
    issuer: str | None, audience: str | Sequence[str] | None, required: Sequence[str]
) -> dict[str, ClaimsOption]:
    options: dict[str, ClaimsOption] = {name: {"essential": True} for name in required}
    if issuer is not None:
        options["iss"] = {"essential": True, "value": issuer}
    if isinstance(audience, str):
        options["aud"] = {"essential": True, "value": audience}
    elif audience is not None:
        options["aud"] = {"essential": True, "values": list(audience)}
    return options


class TokenVerifier:
    """Header, key, signature, then claims, in that order; raises :class:`Unauthorized`.

    Claims are not looked at before the signature holds, so an attacker learns nothing from
    which claim a forged token fails on.
    """

    def __init__(
        self,
        *,
        algorithms: Sequence[str],
        keys: KeySource,
        issuer: str | None = None,
        audience: str | Sequence[str] | None = None,
        leeway: int = 30,
        required_claims: Sequence[str] = ("sub", "exp"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.algorithms = frozenset(algorithms)
        self.keys = keys
        # Unknown header parameters are allowed (the signature covers them; some providers
        # add their own), but `crit` ones the library does not understand are still refused.
        self._registry = ConfiguredAlgorithms(
            algorithms=sorted(self.algorithms), strict_check_header=False
        )
        self._claims = JWTClaimsRegistry(now=lambda: int(clock()), leeway=leeway)
        self._claims.options = _claims_options(
            issuer, audience, list(dict.fromkeys(required_claims))
        )

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, once the token is proven genuine, current and meant for us."""
        try:
            signed = jws.extract_compact(token.encode(), registry=self._registry)
            header = signed.headers()
        except (JoseError, ValueError, TypeError, UnicodeError):
            raise _refused("the token is not a well-formed JWT") from None
        alg = header.get("alg")
        kid = header.get("kid")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise _refused("the token's signing algorithm is not accepted")
        if kid is not None and not isinstance(kid, str):
            raise _refused("the token is not a well-formed JWT")
        candidates = await self.keys.keys_for(kid, alg)
        if not candidates:
            raise _refused("the token was signed with an unknown key")
        if not any(self._signed_by(signed, key) for key in candidates):
            raise _refused("the token's signature is not valid")
        try:
            claims = json.loads(signed.payload or b"")
        except ValueError:
            raise _refused("the token's claims are not JSON") from None
        if not isinstance(claims, dict):
            raise _refused("the token's claims are not a JSON object")
        self._check_claims(claims)
        return claims

    def _signed_by(self, signed: jws.CompactSignature, key: Key) -> bool:
        try:
            return jws.validate_compact(signed, key, registry=self._registry)
        except JoseError:
            return False

    def _check_claims(self, claims: dict[str, Any]) -> None:
        try:
            self._claims.validate(claims)
        except ExpiredTokenError:
            raise _refused("the token has expired", code="expired_token") from None
        except MissingClaimError as exc:
            raise _refused(f"the token lacks a required claim ({exc.claim})") from None
        except ClaimError as exc:
            if exc.claim == "nbf":
                raise _refused("the token is not valid yet") from None
            if exc.claim == "iat":
                raise _refused("the token was issued in the future") from None
            raise _refused(f"the token's {exc.claim!r} claim is not accepted") from None


def _refused(message: str, *, code: str = "invalid_token") -> Unauthorized:
    log.debug("bearer token refused: %s", message)
    return Unauthorized(message, code=code)


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` names this machine (plain http to it cannot be intercepted)."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class JwtAuth(Authenticator):
    """Authenticate ``Authorization: Bearer <jwt>``; keys from ``secret``, ``public_keys``
    or ``jwks_url`` (exactly one)."""

    algorithms: tuple[Algorithm, ...] = Field(
        min_length=1, description="Accepted `alg` values; HMAC and public-key ones never mix"
    )
    secret: SecretStr | None = Field(None, description="HMAC secret (HS256/384/512)")
    public_keys: tuple[str, ...] | None = Field(
        None, min_length=1, description="PEM public keys or JWKs in JSON"
    )
    jwks_url: str | None = Field(None, description="The identity provider's JWK set")
    issuer: str | None = Field(None, min_length=1, description="Required `iss`")
    audience: str | tuple[str, ...] | None = Field(
        None, description="Required `aud` (one of, when a list)"
    )
    leeway: int = Field(30, ge=0, le=600, description="Clock skew allowed on exp/nbf/iat (s)")
    required_claims: tuple[str, ...] = Field(("sub", "exp"), description="Claims a token needs")
    subject_claim: str = Field("sub", min_length=1, description="The claim naming the user")
    jwks_refresh_interval: float = Field(300.0, gt=0, description="Key set lifetime (s)")
    jwks_min_refresh_interval: float = Field(
        30.0, ge=0, description="Least time between fetches, e.g. for unknown `kid`s (s)"
    )
    jwks_retry_interval: float = Field(
        2.0, ge=0, description="Retry delay after a failed fetch while nothing is cached (s)"
    )
    jwks_timeout: float = Field(5.0, gt=0, le=60, description="One key set fetch (s)")
    jwks_allow_http: bool = Field(
        False, description="Allow a plain-http `jwks_url` to a non-loopback host"
    )
    when_unavailable: Literal["reject", "fallback_keys"] = Field(
        "reject",
        description="While no key could ever be fetched from `jwks_url`: reject (503 with "
        "Retry-After) or fallback_keys (verify with `jwks_fallback_keys`)",
    )
    jwks_fallback_keys: tuple[str, ...] | None = Field(
        None,
        min_length=1,
        description="Pinned public keys (PEM or JWK) for when_unavailable = 'fallback_keys'",
    )

    _verifier: TokenVerifier = PrivateAttr()
    _jwks: JwksCache | None = PrivateAttr(None)
    _outages: dict[str, int] = PrivateAttr(
        default_factory=lambda: {"rejected": 0, "fallback_keys": 0}
    )

    @field_validator("algorithms")
    @classmethod
    def _one_family(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("an algorithm is listed twice")
        hmac = {a for a in value if a in HMAC_ALGORITHMS}
        if hmac and len(hmac) != len(value):
            raise ValueError(
                "HMAC (HS*) and public-key algorithms cannot be mixed: a public key would "
                "then be usable as an HMAC secret"
            )
        return value

    @field_validator("public_keys", "jwks_fallback_keys")
    @classmethod
    def _importable(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for text in value or ():
            import_public_key(text)
        return value

    @field_validator("jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("expected an http(s) URL")
        if url.user is not None or url.password is not None:
            raise ValueError("credentials in the URL would end up in logs; drop them")
        return value

    @field_validator("required_claims")
    @classmethod
    def _named(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not name for name in value):
            raise ValueError("claim names cannot be empty")
        return value

    def _required(self) -> tuple[str, ...]:
        """Claims every accepted token must carry; subclasses add their own."""
        return (*self.required_claims, self.subject_claim)

    def model_post_init(self, context: Any, /) -> None:
        sources = [s for s in (self.secret, self.public_keys, self.jwks_url) if s is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of `secret`, `public_keys` or `jwks_url`")
        fallback = self.when_unavailable == "fallback_keys"
        if fallback and (self.jwks_url is None or self.jwks_fallback_keys is None):
            raise ValueError(
                "when_unavailable = 'fallback_keys' needs `jwks_url` and `jwks_fallback_keys`"
            )
        if self.jwks_fallback_keys is not None and not fallback:
            raise ValueError(
                "`jwks_fallback_keys` are only used with when_unavailable = 'fallback_keys'"
            )
        hmac = [a for a in self.algorithms if a in HMAC_ALGORITHMS]
        keys: KeySource
        if self.secret is not None:
            if not hmac:
                raise ValueError("`secret` is for HS256/HS384/HS512 only")
            secret = self.secret.get_secret_value().encode()
            shortest = max(HMAC_ALGORITHMS[a] for a in hmac)
            if len(secret) < shortest:
                raise ValueError(f"`secret` must be at least {shortest} bytes for {hmac}")
            keys = StaticKeys([OctKey.import_key(secret)])
        elif hmac:
            raise ValueError("HS256/HS384/HS512 need `secret`; keys and JWKS are public")
        elif self.public_keys is not None:
            keys = self._static_keys("public_keys", self.public_keys)
        else:
            url = URL(cast(str, self.jwks_url))
            if url.scheme != "https" and not (self.jwks_allow_http or is_loopback(url.host)):
                raise ValueError(
                    "`jwks_url` must be https (anyone on the path could swap the keys); "
                    "set `jwks_allow_http = true` to accept the risk"
                )
            self._jwks = JwksCache(
                str(url),
                refresh_interval=self.jwks_refresh_interval,
                min_refresh_interval=self.jwks_min_refresh_interval,
                retry_interval=self.jwks_retry_interval,
                timeout=self.jwks_timeout,
            )
            pinned = self.jwks_fallback_keys
            keys = JwksKeys(
                self._jwks,
                self._static_keys("jwks_fallback_keys", pinned) if pinned else None,
                self._outages,
            )
        self._verifier = TokenVerifier(
            algorithms=self.algorithms,
            keys=keys,
            issuer=self.issuer,
            audience=self.audience,
            leeway=self.leeway,
            required_claims=self._required(),
        )

    def _static_keys(self, option: str, texts: Sequence[str]) -> StaticKeys:
        imported = [import_public_key(text) for text in texts]
        for index, key in enumerate(imported):
            if not any(key_fits(key, alg) for alg in self.algorithms):
                raise ValueError(f"{option}[{index}] fits none of {list(self.algorithms)}")
        return StaticKeys(imported)

    @property
    def jwks(self) -> JwksCache | None:
        """The JWKS cache (its counters feed tests and metrics), when keys come from a URL."""
        return self._jwks

    @property
    def outages(self) -> dict[str, int]:
        """Tokens that arrived while no JWKS key could be had, by outcome: ``rejected``
        (answered 503) and ``fallback_keys`` (verified with the pinned keys)."""
        return dict(self._outages)

    def metrics(self) -> Iterator[StepMetric]:
        jwks = self._jwks
        if jwks is None:
            return
        yield StepMetric(
            "electric_proxy_jwks_fetches",
            "counter",
            "JWKS fetches started (refreshes included)",
            jwks.fetches,
        )
        yield StepMetric(
            "electric_proxy_jwks_fetch_failures",
            "counter",
            "JWKS fetches that failed (the cached keys were kept)",
            jwks.failures,
        )
        yield StepMetric(
            "electric_proxy_jwks_keys", "gauge", "Signing keys currently cached", len(jwks.keys)
        )
        for outcome, count in self._outages.items():
            yield StepMetric(
                "electric_proxy_auth_unavailable",
                "counter",
                "Tokens that arrived while no signing key could be had, by what was done "
                "(rejected: 503; fallback_keys: verified with the pinned fallback keys)",
                count,
                {"outcome": outcome},
            )

    async def ready(self) -> str | None:
        """Not ready while a JWKS step has no key and would reject tokens for it."""
        if self._jwks is None or self.when_unavailable == "fallback_keys":
            return None
        if await self._jwks.load():
            return None
        return "the identity provider's signing keys could not be fetched"

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """Open the JWKS session with the app and close it on shutdown."""
        if self._jwks is None:
            yield
            return
        await self._jwks.open()
        try:
            yield
        finally:
            await self._jwks.close()

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; :class:`Unauthorized` (or 503) otherwise."""
        return await self._verifier.verify(token)

    def principal(self, claims: dict[str, Any]) -> Principal:
        subject = claims.get(self.subject_claim)
        if isinstance(subject, bool) or not isinstance(subject, str | int) or subject == "":
            raise _refused(f"the token's {self.subject_claim!r} claim is not a usable id")
        return Principal(str(subject), claims)

    def identity_headers(self) -> tuple[str, ...]:
        return (hdrs.AUTHORIZATION,)

    async def authenticate(self, request: web.Request) -> Principal | None:
        token = bearer_token(request)
        if token is None:
            return None
        claims = await self.verify(token)
        principal = self.principal(claims)
        _record_expiry(request, claims, self.leeway)
        return principal


def _record_expiry(request: web.Request, claims: dict[str, Any], leeway: int) -> None:
    """Note when this token stops being accepted (``exp`` plus the leeway the check allows),
    so that a live request it opened is ended then rather than streaming on."""
    exp = claims.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        request[CREDENTIAL_EXPIRES] = float(exp) + leeway
