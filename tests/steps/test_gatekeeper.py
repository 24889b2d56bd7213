"""The gatekeeper: a token for one exact shape, minted by the app, verified by the proxy.

The app under test holds both halves, like a real deployment: ``POST /gatekeeper/{table}``
(the issuer, behind a cookie login) and the proxied ``/v1/shape`` (the verifier step).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import pytest
from aiohttp import web
from joserfc.jwk import OctKey, OKPKey
from pydantic import ValidationError
from test_jwt import bearer, claims, sign
from yarl import URL

from electric_proxy import Credentials, Forbidden, ShapeProxy
from electric_proxy.steps.gatekeeper import GatekeeperIssuer, GatekeeperVerifier, Grant, ShapeClaim
from electric_proxy.testing import RunningUpstream
from electric_proxy.where import split_identifiers

GK_SECRET = "gatekeeper-secret-for-tests-0123456789abcdef"
SESSIONS = {"s-alice": ("alice", "acme"), "s-bob": ("bob", "globex")}
COLUMNS = ["id", "org_id", "title"]


def todos_for(org: str, **changes: Any) -> dict[str, Any]:
    return {
        "table": "todos",
        "where": "org_id = $1",
        "params": [org],
        "columns": COLUMNS,
        **changes,
    }


async def authorize(request: web.Request) -> Grant | None:
    """The app's own login and authorisation: a session cookie and one shape per table."""
    session = SESSIONS.get(request.cookies.get("sid", ""))
    if session is None:
        return None
    if request.match_info["table"] == "broken":
        return {"sub": "alice", "shape": {"table": "", "secret_notes": "x"}}
    if request.match_info["table"] != "todos":
        raise Forbidden("no such shape for you", code="shape_not_allowed")
    user, org = session
    return {"sub": user, "shape": todos_for(org), "claims": {"org_id": org}}


def query_for(shape: Mapping[str, Any], **protocol: str) -> dict[str, str]:
    """The query the TypeScript client builds from ``params: shape`` (names quoted)."""
    query: dict[str, str] = {"offset": "-1", **protocol, "table": shape["table"]}
    if "where" in shape:
        query["where"] = shape["where"]
    if "columns" in shape:
        query["columns"] = ",".join(f'"{c}"' for c in shape["columns"])
    if "replica" in shape:
        query["replica"] = shape["replica"]
    for n, value in shape.get("params", {}).items():
        query[f"params[{n}]"] = value
    return query


def app_with(
    upstream: RunningUpstream, issuer: GatekeeperIssuer, verifier: GatekeeperVerifier
) -> web.Application:
    app = web.Application()
    ShapeProxy(upstream=upstream.url, chain=[verifier, Credentials(secret=upstream.secret)]).setup(
        app
    )
    app.router.add_post("/gatekeeper/{table}", issuer.handler(authorize))
    return app


@pytest.fixture
def issuer() -> GatekeeperIssuer:
    return GatekeeperIssuer(key=GK_SECRET, url="/v1/shape", ttl=60)


@pytest.fixture
async def client(
    aiohttp_client: Any, electric_upstream: RunningUpstream, issuer: GatekeeperIssuer
) -> Any:
    verifier = GatekeeperVerifier(algorithms=["HS256"], secret=GK_SECRET)
    return await aiohttp_client(app_with(electric_upstream, issuer, verifier))


async def grant(client: Any, sid: str = "s-alice", table: str = "todos") -> dict[str, Any]:
    resp = await client.post(f"/gatekeeper/{table}", cookies={"sid": sid})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = await resp.json()
    return body


def token_of(granted: Mapping[str, Any]) -> str:
    return str(granted["headers"]["Authorization"]).removeprefix("Bearer ")


async def assert_refused(
    resp: Any,
    upstream: RunningUpstream,
    token: str,
    caplog: pytest.LogCaptureFixture,
    *,
    status: int,
    code: str,
) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == status, text
    body: dict[str, Any] = json.loads(text)
    assert body["error"] == code
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
    assert upstream.electric.requests == []
    for part in token.split("."):
        assert part not in text and part not in caplog.text
    return body


# --- the whole flow ---------------------------------------------------------------------------


async def test_gatekeeper_flow_end_to_end(client: Any, electric_upstream: RunningUpstream) -> None:
    granted = await grant(client)
    assert granted["url"] == str(client.make_url("/v1/shape"))
    assert granted["shape"] == {
        "table": "todos",
        "where": "org_id = $1",
        "params": {"1": "acme"},
        "columns": COLUMNS,
        "replica": "default",
    }
    assert granted["expires_at"] - time.time() == pytest.approx(60, abs=2)

    query = query_for(granted["shape"])
    resp = await client.get("/v1/shape", params=query, headers=granted["headers"])
    assert resp.status == 200, await resp.text()
    rows = [m["value"] for m in await resp.json() if "value" in m]
    assert rows and {r["org_id"] for r in rows} == {"acme"}
    assert set(rows[0]) == set(COLUMNS)

    sent = electric_upstream.electric.requests[-1].query
    assert sent["table"] == "todos"
    assert sent["where"] == "org_id = $1"
    assert sent["params[1]"] == "acme"
    assert sent["columns"] == "id,org_id,title"
    assert sent["secret"] == electric_upstream.secret
    assert "replica" not in sent

    # Protocol parameters move on with the stream and are not compared.
    handle, offset = resp.headers["electric-handle"], resp.headers["electric-offset"]
    more = query_for(granted["shape"], handle=handle)
    more["offset"] = offset
    resp = await client.get("/v1/shape", params=more, headers=granted["headers"])
    assert resp.status == 200
    assert electric_upstream.electric.requests[-1].query["handle"] == handle


async def test_bob_gets_his_own_shape(client: Any, electric_upstream: RunningUpstream) -> None:
    granted = await grant(client, "s-bob")
    resp = await client.get(
        "/v1/shape", params=query_for(granted["shape"]), headers=granted["headers"]
    )
    rows = [m["value"] for m in await resp.json() if "value" in m]
    assert rows and {r["org_id"] for r in rows} == {"globex"}


async def test_unquoted_columns_match_too(client: Any) -> None:
    granted = await grant(client)
    query = query_for(granted["shape"])
    query["columns"] = "id,org_id,title"
    resp = await client.get("/v1/shape", params=query, headers=granted["headers"])
    assert resp.status == 200


# --- the endpoint -----------------------------------------------------------------------------


async def test_the_endpoint_needs_the_apps_login(client: Any) -> None:
    resp = await client.post("/gatekeeper/todos")
    assert resp.status == 401
    assert (await resp.json())["error"] == "missing_token"


async def test_the_endpoint_relays_the_apps_refusal(client: Any) -> None:
    resp = await client.post("/gatekeeper/secrets", cookies={"sid": "s-alice"})
    assert resp.status == 403
    assert (await resp.json())["error"] == "shape_not_allowed"


async def test_a_bad_grant_is_a_500_that_reveals_nothing(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    resp = await client.post("/gatekeeper/broken", cookies={"sid": "s-alice"})
    assert resp.status == 500
    body = await resp.json()
    assert body == {"error": "internal_error", "message": "the gatekeeper could not issue a token"}
    assert "unusable grant" in caplog.text and "invalid shape" in caplog.text


# --- the verifier -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "parameter"),
    [
        ({"table": "users"}, "table"),
        ({"table": "public.todos"}, "table"),
        ({"where": "true"}, "where"),
        ({"where": "org_id = $1 OR true"}, "where"),
        ({"where": None}, "where"),
        ({"params[1]": "globex"}, "params"),
        ({"params[1]": None}, "params"),
        ({"params[2]": "extra"}, "params"),
        ({"columns": '"id","org_id","title","secret_notes"'}, "columns"),
        ({"columns": '"id","title","org_id"'}, "columns"),
        ({"columns": None}, "columns"),
        ({"columns": '"id",'}, "columns"),
        ({"replica": "full"}, "replica"),
    ],
)
async def test_any_other_shape_is_403(
    client: Any,
    electric_upstream: RunningUpstream,
    caplog: pytest.LogCaptureFixture,
    change: dict[str, str | None],
    parameter: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    granted = await grant(client)
    query: dict[str, str] = query_for(granted["shape"])
    for key, value in change.items():
        if value is None:
            query.pop(key)
        else:
            query[key] = value
    resp = await client.get("/v1/shape", params=query, headers=granted["headers"])
    body = await assert_refused(
        resp, electric_upstream, token_of(granted), caplog, status=403, code="shape_not_allowed"
    )
    assert body["parameter"] == parameter


async def test_params_are_compared_even_for_the_same_where(
    client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """What Electric's Caddy and edge gatekeepers let through: another tenant's params."""
    alice = await grant(client, "s-alice")
    bob_query = query_for((await grant(client, "s-bob"))["shape"])
    resp = await client.get("/v1/shape", params=bob_query, headers=alice["headers"])
    await assert_refused(
        resp, electric_upstream, token_of(alice), caplog, status=403, code="shape_not_allowed"
    )


async def test_replica_full_is_granted_and_forwarded(
    aiohttp_client: Any, electric_upstream: RunningUpstream, issuer: GatekeeperIssuer
) -> None:
    verifier = GatekeeperVerifier(algorithms=["HS256"], secret=GK_SECRET)
    client = await aiohttp_client(app_with(electric_upstream, issuer, verifier))
    token = issuer.mint(todos_for("acme", replica="full"), "alice")
    shape = ShapeClaim.model_validate(todos_for("acme", replica="full")).claim()
    resp = await client.get("/v1/shape", params=query_for(shape), headers=bearer(token))
    assert resp.status == 200, await resp.text()
    assert electric_upstream.electric.requests[-1].query["replica"] == "full"
    default = query_for(shape)
    del default["replica"]
    assert (await client.get("/v1/shape", params=default, headers=bearer(token))).status == 403


async def test_an_expired_grant_is_401(
    aiohttp_client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    past = GatekeeperIssuer(key=GK_SECRET, ttl=60, clock=lambda: time.time() - 3600)
    verifier = GatekeeperVerifier(algorithms=["HS256"], secret=GK_SECRET)
    client = await aiohttp_client(app_with(electric_upstream, past, verifier))
    granted = await grant(client)
    resp = await client.get(
        "/v1/shape", params=query_for(granted["shape"]), headers=granted["headers"]
    )
    await assert_refused(
        resp, electric_upstream, token_of(granted), caplog, status=401, code="expired_token"
    )


@pytest.mark.parametrize(
    "token",
    [
        GatekeeperIssuer(key="another-secret-entirely-0123456789abcdef").mint(
            todos_for("acme"), "alice"
        ),
        sign(claims(), OctKey.import_key(GK_SECRET), "HS256"),
        sign(claims(shape="todos"), OctKey.import_key(GK_SECRET), "HS256"),
        sign(
            claims(shape={"table": "todos", "params": {"2": "x"}}),
            OctKey.import_key(GK_SECRET),
            "HS256",
        ),
    ],
    ids=["other-secret", "no-shape-claim", "shape-not-an-object", "shape-malformed"],
)
async def test_tokens_that_grant_nothing_are_401(
    client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture, token: str
) -> None:
    query = query_for(ShapeClaim.model_validate(todos_for("acme")).claim())
    resp = await client.get("/v1/shape", params=query, headers=bearer(token))
    await assert_refused(resp, electric_upstream, token, caplog, status=401, code="invalid_token")


async def test_no_token_is_401(client: Any, electric_upstream: RunningUpstream) -> None:
    resp = await client.get("/v1/shape", params={"offset": "-1", "table": "todos"})
    assert resp.status == 401
    assert (await resp.json())["error"] == "missing_token"
    assert electric_upstream.electric.requests == []


async def test_subsets_are_not_covered(
    client: Any, electric_upstream: RunningUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    granted = await grant(client)
    token = token_of(granted)
    query = {**query_for(granted["shape"]), "subset__where": "true", "subset__limit": "5"}
    resp = await client.get("/v1/shape", params=query, headers=granted["headers"])
    await assert_refused(
        resp, electric_upstream, token, caplog, status=403, code="subsets_not_allowed"
    )
    resp = await client.post(
        "/v1/shape", params=query_for(granted["shape"]), headers=granted["headers"], json={}
    )
    await assert_refused(
        resp, electric_upstream, token, caplog, status=403, code="subsets_not_allowed"
    )


async def test_a_repeated_shape_parameter_is_refused(
    client: Any, electric_upstream: RunningUpstream
) -> None:
    granted = await grant(client)
    url = URL("/v1/shape").with_query(query_for(granted["shape"]))
    resp = await client.get(f"{url}&params%5B1%5D=globex", headers=granted["headers"])
    assert resp.status == 400
    assert (await resp.json())["error"] == "duplicate_parameter"
    assert electric_upstream.electric.requests == []


async def test_eddsa_grants_need_only_the_public_key_at_the_proxy(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    private = OKPKey.generate_key("Ed25519")
    issuer = GatekeeperIssuer(
        key=private.as_pem(private=True).decode(),
        algorithm="EdDSA",
        issuer="https://app.example",
        audience="electric-shapes",
    )
    verifier = GatekeeperVerifier(
        algorithms=["EdDSA"],
        public_keys=[issuer.public_key_pem()],
        issuer="https://app.example",
        audience="electric-shapes",
    )
    client = await aiohttp_client(app_with(electric_upstream, issuer, verifier))
    granted = await grant(client)
    header = json.loads(_segment(token_of(granted), 0))
    assert header["alg"] == "EdDSA" and header["kid"] == private.thumbprint()
    resp = await client.get(
        "/v1/shape", params=query_for(granted["shape"]), headers=granted["headers"]
    )
    assert resp.status == 200, await resp.text()
    jwks = issuer.public_jwks()
    assert jwks["keys"][0]["kid"] == private.thumbprint() and "d" not in jwks["keys"][0]


def _segment(token: str, index: int) -> bytes:
    part = token.split(".")[index]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


async def test_a_custom_shape_claim(
    aiohttp_client: Any, electric_upstream: RunningUpstream
) -> None:
    issuer = GatekeeperIssuer(key=GK_SECRET, shape_claim="electric_shape")
    verifier = GatekeeperVerifier(
        algorithms=["HS256"], secret=GK_SECRET, shape_claim="electric_shape"
    )
    client = await aiohttp_client(app_with(electric_upstream, issuer, verifier))
    granted = await grant(client)
    payload = json.loads(_segment(token_of(granted), 1))
    assert "electric_shape" in payload and "shape" not in payload
    assert payload["org_id"] == "acme"
    resp = await client.get(
        "/v1/shape", params=query_for(granted["shape"]), headers=granted["headers"]
    )
    assert resp.status == 200


# --- the shape claim and the issuer -----------------------------------------------------------


def test_shape_claims_are_canonical() -> None:
    shape = ShapeClaim.model_validate(
        {"table": "todos", "params": ["a", "b"], "columns": 'id,"Due Date","a""b"'}
    )
    assert shape.params == {"1": "a", "2": "b"}
    assert shape.columns == ("id", "Due Date", 'a"b')
    assert shape.claim() == {
        "table": "todos",
        "params": {"1": "a", "2": "b"},
        "columns": ["id", "Due Date", 'a"b'],
        "replica": "default",
    }
    assert dict(shape.upstream_params())["columns"] == 'id,"Due Date","a""b"'
    assert ShapeClaim.model_validate({"table": "t", "params": {"2": "y", "1": "x"}}).params == {
        "1": "x",
        "2": "y",
    }


@pytest.mark.parametrize(
    "shape",
    [
        {"table": ""},
        {"table": "t", "params": {"2": "x"}},
        {"table": "t", "params": {"0": "x"}},
        {"table": "t", "params": [1]},
        {"table": "t", "columns": []},
        {"table": "t", "columns": '"unterminated'},
        {"table": "t", "replica": "partial"},
        {"table": "t", "secret": "x"},
    ],
)
def test_malformed_shapes_are_refused(shape: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ShapeClaim.model_validate(shape)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("id", ("id",)),
        ("ID,Title", ("id", "title")),
        ('"ID","Title"', ("ID", "Title")),
        ('"a,b",c', ("a,b", "c")),
        ('"say ""hi"""', ('say "hi"',)),
        ("", None),
        ("a,,b", None),
        ("a,", None),
        ('"a"b', None),
        ('a"b"', None),
        ('"a', None),
    ],
)
def test_split_identifiers(text: str, names: tuple[str, ...] | None) -> None:
    assert split_identifiers(text) == names


def test_issuer_guards() -> None:
    issuer = GatekeeperIssuer(key=GK_SECRET)
    with pytest.raises(ValueError, match="may not set"):
        issuer.mint(todos_for("acme"), "alice", claims={"exp": 1})
    with pytest.raises(ValueError, match="may not set"):
        issuer.mint(todos_for("acme"), "alice", claims={"shape": {}})
    with pytest.raises(ValueError, match="positive"):
        issuer.mint(todos_for("acme"), "alice", ttl=0)
    with pytest.raises(ValueError, match="subject"):
        issuer.mint(todos_for("acme"), "")
    with pytest.raises(ValidationError):
        issuer.mint({"table": "todos", "where": "org_id = $1", "params": {"2": "x"}}, "alice")
    with pytest.raises(ValueError, match="no public key"):
        issuer.public_key_pem()
    with pytest.raises(ValueError, match="at least 32 bytes"):
        GatekeeperIssuer(key="short")
    with pytest.raises(ValueError, match="private key"):
        public = OKPKey.generate_key("Ed25519").as_pem(private=False).decode()
        GatekeeperIssuer(key=public, algorithm="EdDSA")
    with pytest.raises(ValueError, match="Ed25519"):
        GatekeeperIssuer(key=OctKey.import_key(GK_SECRET), algorithm="EdDSA")


def test_minted_claims() -> None:
    issuer = GatekeeperIssuer(key=GK_SECRET, issuer="app", audience="proxy", clock=lambda: 1000.5)
    payload = json.loads(_segment(issuer.mint(todos_for("acme"), "alice", 30), 1))
    assert payload["sub"] == "alice"
    assert payload["iat"] == 1000 and payload["exp"] == 1031
    assert payload["iss"] == "app" and payload["aud"] == "proxy"
    assert payload["shape"]["params"] == {"1": "acme"}
    assert len(payload["jti"]) >= 16
