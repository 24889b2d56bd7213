"""The gatekeeper endpoint's half: your ``authorize`` decides, the issuer mints and answers.

See :mod:`electric_proxy.steps.gatekeeper` for the pattern and the answer's JSON. The HS256
secret floor and the algorithm registry are :mod:`~electric_proxy.steps.jwt`'s, the ones the
verifier applies, so the issuer cannot be configured to mint what the verifier refuses.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, NotRequired, TypedDict, cast

from aiohttp import hdrs, web
from joserfc import jws
from joserfc.jwk import DictKey, JWKRegistry, Key, OctKey, OKPKey
from pydantic import ValidationError
from yarl import URL

from ...chain import Handler
from ...errors import ProxyError, Unauthorized
from ..jwt import HMAC_ALGORITHMS, ConfiguredAlgorithms
from .claim import ShapeClaim

__all__ = ["Authorize", "GatekeeperIssuer", "Grant"]

log = logging.getLogger("electric_proxy.gatekeeper")


class Grant(TypedDict):
    """What an ``authorize`` callback returns for a user it lets through."""

    sub: str
    shape: Mapping[str, Any]
    claims: NotRequired[Mapping[str, Any]]
    ttl: NotRequired[float]


Authorize = Callable[[web.Request], Awaitable[Grant | Mapping[str, Any] | None]]

_RESERVED_CLAIMS = frozenset({"sub", "iat", "nbf", "exp", "jti", "iss", "aud"})


class GatekeeperIssuer:
    """Mint gatekeeper tokens (HS256 with a shared secret, or EdDSA with an Ed25519 key).

    With ``EdDSA`` only the public half is needed by the proxy: give it
    :meth:`public_key_pem` in ``public_keys`` (or publish :meth:`public_jwks`).
    """

    def __init__(
        self,
        *,
        key: str | bytes | Key,
        algorithm: Literal["HS256", "EdDSA"] = "HS256",
        url: str = "/v1/shape",
        ttl: float = 300.0,
        issuer: str | None = None,
        audience: str | None = None,
        kid: str | None = None,
        shape_claim: str = "shape",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.algorithm = algorithm
        self.url = url
        self.ttl = ttl
        self.issuer = issuer
        self.audience = audience
        self.shape_claim = shape_claim
        self._clock = clock
        self._key = self._signing_key(key, algorithm)
        self._kid = kid if kid is not None else (None if algorithm == "HS256" else self._key.kid)
        self._registry = ConfiguredAlgorithms(algorithms=[algorithm])

    @staticmethod
    def _signing_key(key: str | bytes | Key, algorithm: str) -> Key:
        if algorithm == "HS256":
            if isinstance(key, OctKey):
                return key
            if not isinstance(key, str | bytes):
                raise ValueError("HS256 needs a secret (str or bytes)")
            raw = key.encode() if isinstance(key, str) else key
            if len(raw) < HMAC_ALGORITHMS["HS256"]:
                raise ValueError("an HS256 secret must be at least 32 bytes")
            return OctKey.import_key(raw)
        if isinstance(key, str | bytes):
            text = key.decode() if isinstance(key, bytes) else key
            if text.lstrip().startswith("{"):
                imported = JWKRegistry.import_key(cast(DictKey, json.loads(text)))
            else:
                imported = JWKRegistry.import_key(text, "OKP")
        else:
            imported = key
        if not (isinstance(imported, OKPKey) and imported.curve_name == "Ed25519"):
            raise ValueError("EdDSA needs an Ed25519 key")
        if not imported.is_private:
            raise ValueError("minting needs the Ed25519 private key")
        imported.ensure_kid()
        return imported

    def public_key_pem(self) -> str:
        """The verification key for the proxy's ``public_keys`` (EdDSA only)."""
        if not isinstance(self._key, OKPKey):
            raise ValueError("HS256 has no public key; the verifier needs the same secret")
        return self._key.as_pem(private=False).decode()

    def public_jwks(self) -> dict[str, Any]:
        """A JWK set holding the verification key, to publish for a ``jwks_url`` (EdDSA)."""
        if self.algorithm == "HS256":
            raise ValueError("HS256 has no public key; the verifier needs the same secret")
        return {"keys": [dict(self._key.as_dict(private=False), use="sig", alg="EdDSA")]}

    def mint(
        self,
        shape: Mapping[str, Any] | ShapeClaim,
        subject: str,
        ttl: float | None = None,
        *,
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A token granting ``subject`` exactly ``shape`` for ``ttl`` seconds.

        The shape is validated and canonicalised first (``params`` as ``{"1": ...}``,
        ``columns`` as a list), so a token can never carry a shape the verifier would
        misread. ``claims`` adds claims for later steps; registered ones cannot be overridden.
        """
        return self._mint(shape, subject, ttl, claims)[0]

    def _mint(
        self,
        shape: Mapping[str, Any] | ShapeClaim,
        subject: str,
        ttl: float | None,
        claims: Mapping[str, Any] | None,
    ) -> tuple[str, int]:
        checked = shape if isinstance(shape, ShapeClaim) else ShapeClaim.model_validate(shape)
        lifetime = self.ttl if ttl is None else ttl
        if lifetime <= 0:
            raise ValueError("ttl must be positive")
        if not subject:
            raise ValueError("the subject cannot be empty")
        extra = dict(claims or {})
        clash = sorted((_RESERVED_CLAIMS | {self.shape_claim}) & set(extra))
        if clash:
            raise ValueError(f"claims may not set {clash}")
        now = self._clock()
        payload: dict[str, Any] = {
            **extra,
            "sub": subject,
            "iat": int(now),
            "exp": math.ceil(now + lifetime),
            "jti": secrets.token_urlsafe(12),
            self.shape_claim: checked.claim(),
        }
        if self.issuer is not None:
            payload["iss"] = self.issuer
        if self.audience is not None:
            payload["aud"] = self.audience
        header: dict[str, Any] = {"alg": self.algorithm, "typ": "JWT"}
        if self._kid is not None:
            header["kid"] = self._kid
        body = json.dumps(payload, separators=(",", ":"))
        token = jws.serialize_compact(header, body, self._key, registry=self._registry)
        return token, payload["exp"]

    def shape_url(self, request: web.Request) -> str:
        """``url`` resolved against the request (configure an absolute one behind proxies)."""
        target = URL(self.url)
        return str(target if target.is_absolute() else request.url.join(target))

    def handler(self, authorize: Authorize) -> Handler:
        """An aiohttp handler: your ``authorize`` decides, the handler mints and answers."""

        async def gatekeeper(request: web.Request) -> web.StreamResponse:
            try:
                grant = await authorize(request)
                if grant is None:
                    raise Unauthorized("authentication required", code="missing_token")
                body = self._answer(request, grant)
            except ProxyError as exc:
                return exc.to_response()
            return web.json_response(body, headers={hdrs.CACHE_CONTROL: "no-store"})

        return gatekeeper

    def _answer(self, request: web.Request, grant: Mapping[str, Any]) -> dict[str, Any]:
        try:
            shape = ShapeClaim.model_validate(grant["shape"])
            subject = grant["sub"]
            if not isinstance(subject, str):
                raise TypeError("`sub` must be a string")
            token, expires_at = self._mint(shape, subject, grant.get("ttl"), grant.get("claims"))
        except (KeyError, TypeError, ValueError) as exc:
            # ValidationError is a ValueError. The grant came from the app's own code: a bug
            # there is a 500, logged by kind so no claim value reaches the log.
            log.error("authorize() returned an unusable grant: %s", _kind(exc))
            raise ProxyError("the gatekeeper could not issue a token") from None
        return {
            "url": self.shape_url(request),
            "headers": {"Authorization": f"Bearer {token}"},
            "shape": shape.claim(),
            "expires_at": expires_at,
        }


def _kind(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        fields = sorted({".".join(str(p) for p in e["loc"]) or "shape" for e in exc.errors()})
        return f"invalid shape ({', '.join(fields)})"
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]!r}"
    return str(exc)
