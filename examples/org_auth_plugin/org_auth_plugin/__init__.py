"""An organisation's own request-signing scheme as an electric-proxy authenticator.

Internal services sign each request with a shared key instead of carrying a JWT::

    X-Org-Auth: keyid=k2;ts=1767225600;sub=alice;org=acme;sig=<hex>

``sig`` is the lower-case hex HMAC-SHA256, under the key named by ``keyid``, of
``org-auth-v1\\n<keyid>\\n<ts>\\n<sub>\\n<org>``. The version prefix and the newlines keep the
fields from sliding into one another (``sub=al`` + ``org=iceacme`` cannot sign the same
bytes as ``sub=alice`` + ``org=acme``).

Keys rotate through the ``keys`` map: add the new key id, move the signers to it, then
remove the old one; a header signed with a removed key is a 401. ``max_skew`` bounds how old
(or how far in the future) ``ts`` may be, which bounds how long a captured header replays.

Config, once this package is installed::

    [[chain]]
    use = "org_hmac"
    keys = { k1 = { "$env" = "ORG_KEY_1" }, k2 = { "$env" = "ORG_KEY_2" } }
    max_skew = 300
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pydantic import Field, PrivateAttr, SecretStr, field_validator

from electric_proxy import Authenticator, Principal, Unauthorized

__all__ = ["OrgHmacAuth", "sign_header"]

_TOKEN = re.compile(r"[A-Za-z0-9@._:+-]{1,256}")
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_FIELDS = frozenset({"keyid", "ts", "sub", "org", "sig"})


def _message(keyid: str, ts: int, sub: str, org: str) -> bytes:
    return f"org-auth-v1\n{keyid}\n{ts}\n{sub}\n{org}".encode()


def sign_header(keyid: str, secret: str, sub: str, org: str, ts: int | None = None) -> str:
    """The ``X-Org-Auth`` value a signer sends (``ts`` defaults to now)."""
    when = int(time.time()) if ts is None else ts
    for name, value in (("keyid", keyid), ("sub", sub), ("org", org)):
        if not _TOKEN.fullmatch(value):
            raise ValueError(f"{name} holds characters the header cannot carry")
    sig = hmac.new(secret.encode(), _message(keyid, when, sub, org), hashlib.sha256).hexdigest()
    return f"keyid={keyid};ts={when};sub={sub};org={org};sig={sig}"


def _parse(raw: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in raw.strip().split(";"):
        name, sep, value = item.strip().partition("=")
        if not sep or name in fields or name not in _FIELDS:
            raise Unauthorized("the X-Org-Auth header is malformed", code="invalid_request")
        fields[name] = value
    well_formed = (
        set(fields) == _FIELDS
        and all(_TOKEN.fullmatch(fields[n]) for n in ("keyid", "sub", "org"))
        and fields["ts"].isascii()
        and fields["ts"].isdigit()
        and len(fields["ts"]) <= 12
        and _HEX_SHA256.fullmatch(fields["sig"].lower()) is not None
    )
    if not well_formed:
        raise Unauthorized("the X-Org-Auth header is malformed", code="invalid_request")
    return fields


class OrgHmacAuth(Authenticator):
    """Authenticate the ``X-Org-Auth`` header against a map of rotating HMAC keys."""

    header: str = Field("X-Org-Auth", min_length=1)
    keys: dict[str, SecretStr] = Field(min_length=1, description="key id -> shared secret")
    max_skew: float = Field(300.0, gt=0, le=3600, description="Seconds `ts` may be off")
    org_claim: str = Field("org_id", min_length=1, description="The claim `org` becomes")

    # Encoded once: the request path only looks keys up.
    _secrets: Mapping[str, bytes] = PrivateAttr()

    @field_validator("keys")
    @classmethod
    def _strong(cls, keys: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for keyid, secret in keys.items():
            if not _TOKEN.fullmatch(keyid):
                raise ValueError(f"key id {keyid!r} holds characters the header cannot carry")
            if len(secret.get_secret_value()) < 32:
                raise ValueError(f"key {keyid!r} is shorter than 32 characters")
        return keys

    def model_post_init(self, context: Any, /) -> None:
        self._secrets = {k: v.get_secret_value().encode() for k, v in self.keys.items()}

    def identity_headers(self) -> tuple[str, ...]:
        # Shared caches in front of the proxy keep one entry per signed header.
        return (self.header,)

    async def authenticate(self, request: web.Request) -> Principal | None:
        raw = request.headers.get(self.header)
        if raw is None:
            return None
        fields = _parse(raw)
        secret = self._secrets.get(fields["keyid"])
        if secret is None:
            raise Unauthorized("the signing key is not (or no longer) accepted")
        ts = int(fields["ts"])
        expected = hmac.new(
            secret, _message(fields["keyid"], ts, fields["sub"], fields["org"]), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, fields["sig"].lower()):
            raise Unauthorized("the signature is not valid")
        # Checked after the signature, so only a genuine header learns that it is stale.
        age = time.time() - ts
        if age > self.max_skew:
            raise Unauthorized("the signed header has expired", code="expired_token")
        if -age > self.max_skew:
            raise Unauthorized("the signed header is dated in the future")
        sub, org = fields["sub"], fields["org"]
        return Principal(sub, {"sub": sub, self.org_claim: org, "key_id": fields["keyid"]})
