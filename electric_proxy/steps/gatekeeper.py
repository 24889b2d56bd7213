"""The gatekeeper pattern: authorise a shape once, then let a signed token carry it.

Two halves, usually in two places:

1. **The gatekeeper endpoint** runs in your app, after your own login. It decides which
   shape the user may sync and answers with a short-lived token whose ``shape`` claim holds
   that exact shape (``table``, ``where``, ``params``, ``columns``, ``replica``)::

       issuer = GatekeeperIssuer(key=os.environ["GATEKEEPER_SECRET"],
                                 url="https://app.example/v1/shape", ttl=300)

       async def authorize(request: web.Request) -> Grant | None:
           user = await my_session_user(request)          # your auth
           if user is None:
               return None                                # 401
           return {"sub": user.id,
                   "shape": {"table": "todos", "where": "org_id = $1",
                             "params": [user.org_id], "columns": ["id", "title"]}}

       app.router.add_post("/gatekeeper/todos", issuer.handler(authorize))

   The answer is JSON, shaped after Electric's Phoenix gatekeeper::

       {"url": "https://app.example/v1/shape",
        "headers": {"Authorization": "Bearer <token>"},
        "shape": {"table": "todos", "where": "org_id = $1", "params": {"1": "acme"},
                  "columns": ["id", "title"], "replica": "default"},
        "expires_at": 1767225600}

   which a browser passes on as is:
   ``new ShapeStream({url: g.url, headers: g.headers, params: g.shape})``. ``authorize`` may
   raise :class:`~electric_proxy.Forbidden` (403) or any other ``ProxyError``.

2. **The verifier step** (``GatekeeperVerifier``, config name ``gatekeeper``) sits in the
   proxy's chain in place of an authenticator *and* the policy. It verifies the token with
   the very code :class:`~electric_proxy.steps.jwt.JwtAuth` uses, then requires the shape
   the client asks for to equal the claim **parameter by parameter**: ``table``, ``where``,
   every ``params[n]`` (no more, no fewer), ``columns`` and ``replica``. Electric's Caddy and
   edge-function gatekeepers compare only table, where and columns, so a token for
   ``where=org_id = $1`` would serve any ``params[1]``; here that is a 403. Protocol
   parameters (``offset``, ``handle``, ``live``, ``cursor``, ...) are not compared. The
   upstream shape parameters are then set from the verified claim, never from the client.
   Subset snapshots (``subset__*``, ``POST``) are refused: the claim does not cover them.

A missing, invalid or expired token is a 401 (``invalid_token`` / ``expired_token``); a
valid token for another shape is a 403 ``shape_not_allowed`` naming the parameter.
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
from multidict import MultiMapping
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)
from yarl import URL

from ..chain import Handler, client_query
from ..errors import Forbidden, ProxyError, Unauthorized
from ..keys import PRINCIPAL, UPSTREAM
from ..protocol import PARAMS_PREFIX
from .jwt import HMAC_ALGORITHMS, ConfiguredAlgorithms, JwtAuth

__all__ = [
    "Authorize",
    "GatekeeperIssuer",
    "GatekeeperVerifier",
    "Grant",
    "ShapeClaim",
    "split_identifiers",
]

log = logging.getLogger("electric_proxy.gatekeeper")


def split_identifiers(text: str) -> tuple[str, ...] | None:
    """``id,"Due Date",title`` as Postgres names (``("id", "Due Date", "title")``).

    Unquoted names fold to lower case and quoted ones keep case, commas and doubled quotes,
    the way Electric reads ``columns``; the TypeScript client quotes every name it sends.
    ``None`` when the list is malformed.
    """
    names: list[str] = []
    i, end = 0, len(text)
    while True:
        if text.startswith('"', i):
            parts: list[str] = []
            j = i + 1
            while True:
                close = text.find('"', j)
                if close < 0:
                    return None
                parts.append(text[j:close])
                if text.startswith('""', close):
                    parts.append('"')
                    j = close + 2
                    continue
                i = close + 1
                break
            name = "".join(parts)
        else:
            comma = text.find(",", i)
            stop = end if comma < 0 else comma
            name = text[i:stop]
            if '"' in name:
                return None
            name = name.lower()
            i = stop
        if not name:
            return None
        names.append(name)
        if i == end:
            return tuple(names)
        if text[i] != ",":
            return None
        i += 1


def _quote_identifier(name: str) -> str:
    if name.isidentifier() and name == name.lower():
        return name
    return '"' + name.replace('"', '""') + '"'


class ShapeClaim(BaseModel):
    """The one shape a gatekeeper token grants, in the form the TypeScript client takes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    table: str = Field(min_length=1, description="As the client sends it, e.g. `public.todos`")
    where: str | None = Field(None, min_length=1)
    params: dict[str, str] = Field(
        default_factory=dict, description='{"1": "acme"} or ["acme"]; values bind $1, $2, ...'
    )
    columns: tuple[str, ...] | None = Field(
        None, min_length=1, description='Column names, or one "id,title" string'
    )
    replica: Literal["default", "full"] = "default"

    @field_validator("params", mode="before")
    @classmethod
    def _numbered(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return {str(i): v for i, v in enumerate(value, start=1)}
        return value

    @field_validator("params")
    @classmethod
    def _sequential(cls, value: dict[str, str]) -> dict[str, str]:
        if sorted(value) != sorted(str(i) for i in range(1, len(value) + 1)):
            raise ValueError("params must be numbered 1, 2, ... without gaps")
        return {str(i): value[str(i)] for i in range(1, len(value) + 1)}

    @field_validator("columns", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        if isinstance(value, str):
            names = split_identifiers(value)
            if names is None:
                raise ValueError("not a list of column names")
            return names
        return value

    @field_serializer("columns")
    def _as_list(self, value: tuple[str, ...] | None) -> list[str] | None:
        return list(value) if value is not None else None

    def claim(self) -> dict[str, Any]:
        """The canonical JSON form, as it goes into a token and out to the client."""
        return self.model_dump(mode="json", exclude_none=True)

    def upstream_params(self) -> list[tuple[str, str]]:
        """The shape parameters Electric gets: the claim's, whatever the client sent."""
        out = [("table", self.table)]
        if self.columns is not None:
            out.append(("columns", ",".join(_quote_identifier(c) for c in self.columns)))
        if self.replica != "default":
            out.append(("replica", self.replica))
        if self.where is not None:
            out.append(("where", self.where))
        out += [(f"params[{n}]", v) for n, v in self.params.items()]
        return out

    def mismatch(self, query: MultiMapping[str]) -> str | None:
        """The first shape parameter where the client's request differs from this claim."""
        if query.get("table") != self.table:
            return "table"
        if query.get("where") != self.where:
            return "where"
        sent: dict[str, str] = {}
        for key, value in query.items():
            if key.startswith(PARAMS_PREFIX):
                if not key.endswith("]"):
                    return "params"
                sent[key[len(PARAMS_PREFIX) : -1]] = value
        if sent != self.params:
            return "params"
        columns = query.get("columns")
        if (split_identifiers(columns) if columns is not None else None) != self.columns:
            return "columns"
        if query.get("replica", "default") != self.replica:
            return "replica"
        return None


class GatekeeperVerifier(JwtAuth):
    """Accept a shape request only with a token whose ``shape`` claim is exactly that shape.

    Replaces both the authenticator and the policy in a chain (keep ``credentials`` after
    it). Options are :class:`~electric_proxy.steps.jwt.JwtAuth`'s plus ``shape_claim``.
    """

    shape_claim: str = Field("shape", min_length=1, description="The claim holding the shape")

    def _required(self) -> tuple[str, ...]:
        return (*super()._required(), self.shape_claim)

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == hdrs.METH_OPTIONS:
            return await handler(request)
        principal = await self.authenticate(request)
        if principal is None:
            raise Unauthorized("authentication required", code="missing_token")
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
        request[PRINCIPAL] = principal
        built = request[UPSTREAM].query
        for key, value in shape.upstream_params():
            built[key] = value
        return await handler(request)


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
