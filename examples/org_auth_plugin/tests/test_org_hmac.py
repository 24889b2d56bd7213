"""The plugin against electric-proxy's own fixtures: a real proxy in front of a fake Electric."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from org_auth_plugin import OrgHmacAuth, sign_header
from pydantic import ValidationError

from electric_proxy import Credentials, ShapePolicy, available_steps
from electric_proxy.testing import RunningUpstream, shape_messages

K1 = "org-key-one-0123456789abcdef-0123456789"
K2 = "org-key-two-0123456789abcdef-0123456789"


def proxy_chain(upstream: RunningUpstream, keys: dict[str, str]) -> list[Any]:
    return [
        OrgHmacAuth(keys=keys, max_skew=60),
        ShapePolicy(shapes={"todos": {"where": "org_id = :org_id"}}),
        Credentials(secret=upstream.secret),
    ]


async def test_a_signed_header_sees_its_org_only(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    client = await proxy_client(proxy_chain(electric_upstream, {"k1": K1}))
    for org in ("acme", "globex"):
        header = sign_header("k1", K1, "alice", org)
        resp = await client.get("/v1/shape?offset=-1", headers={"X-Org-Auth": header})
        assert resp.status == 200, await resp.text()
        found = shape_messages(await resp.json()).rows
        assert found and {r["org_id"] for r in found} == {org}
        assert electric_upstream.electric.requests[-1].query["params[1]"] == org


async def test_both_keys_work_while_rotating_then_the_old_one_is_refused(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    during = await proxy_client(proxy_chain(electric_upstream, {"k1": K1, "k2": K2}))
    for keyid, secret in (("k1", K1), ("k2", K2)):
        header = sign_header(keyid, secret, "alice", "acme")
        assert (await during.get("/v1/shape?offset=-1", headers={"X-Org-Auth": header})).ok

    electric_upstream.electric.requests.clear()
    after = await proxy_client(proxy_chain(electric_upstream, {"k2": K2}))
    resp = await after.get(
        "/v1/shape?offset=-1", headers={"X-Org-Auth": sign_header("k1", K1, "alice", "acme")}
    )
    assert resp.status == 401
    assert (await resp.json())["error"] == "invalid_token"
    assert electric_upstream.electric.requests == []


def tampered(header: str, field: str, value: str) -> str:
    parts = dict(item.split("=", 1) for item in header.split(";"))
    parts[field] = value
    return ";".join(f"{k}={v}" for k, v in parts.items())


@pytest.mark.parametrize(
    ("make_header", "code"),
    [
        (
            lambda: tampered(sign_header("k1", K1, "alice", "acme"), "sig", "0" * 64),
            "invalid_token",
        ),
        (
            lambda: tampered(sign_header("k1", K1, "alice", "acme"), "org", "globex"),
            "invalid_token",
        ),
        (lambda: tampered(sign_header("k1", K1, "alice", "acme"), "sub", "root"), "invalid_token"),
        (lambda: sign_header("k1", K2, "alice", "acme"), "invalid_token"),
        (lambda: sign_header("k9", K1, "alice", "acme"), "invalid_token"),
        (lambda: sign_header("k1", K1, "alice", "acme", int(time.time()) - 120), "expired_token"),
        (lambda: sign_header("k1", K1, "alice", "acme", int(time.time()) + 120), "invalid_token"),
        (lambda: "keyid=k1;ts=1;sub=alice;org=acme", "invalid_request"),
        (lambda: "keyid=k1;keyid=k1;ts=1;sub=a;org=b;sig=" + "0" * 64, "invalid_request"),
        (lambda: "keyid=k1;ts=soon;sub=a;org=b;sig=" + "0" * 64, "invalid_request"),
        (lambda: "keyid=k1;ts=1;sub=a b;org=b;sig=" + "0" * 64, "invalid_request"),
        (lambda: "keyid=k1;ts=1;sub=a;org=b;sig=xyz", "invalid_request"),
        (lambda: "keyid=k1;ts=1;sub=a;org=b;sig=" + "0" * 64 + ";extra=1", "invalid_request"),
        (lambda: "garbage", "invalid_request"),
    ],
)
async def test_bad_headers_are_401_and_never_reach_electric(
    proxy_client: Any, electric_upstream: RunningUpstream, make_header: Any, code: str
) -> None:
    header = make_header()  # timestamps are relative to now, not to collection time
    client = await proxy_client(proxy_chain(electric_upstream, {"k1": K1}))
    resp = await client.get("/v1/shape?offset=-1", headers={"X-Org-Auth": header})
    assert resp.status == 401
    body = await resp.json()
    assert body["error"] == code
    assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
    assert header.rsplit("sig=", 1)[-1] not in json.dumps(body)
    assert electric_upstream.electric.requests == []


async def test_no_header_is_missing_token(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    client = await proxy_client(proxy_chain(electric_upstream, {"k1": K1}))
    resp = await client.get("/v1/shape?offset=-1")
    assert resp.status == 401
    assert (await resp.json())["error"] == "missing_token"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"keys": {}}, "at least 1"),
        ({"keys": {"k1": "short"}}, "shorter than 32"),
        ({"keys": {"k 1": K1}}, "cannot carry"),
        ({"keys": {"k1": K1}, "max_skew": 0}, "greater than 0"),
    ],
)
def test_bad_options_fail_at_start_up(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        OrgHmacAuth.model_validate(options)


def test_keys_print_masked() -> None:
    step = OrgHmacAuth(keys={"k1": K1})
    assert K1 not in repr(step) and K1 not in json.dumps(step.model_dump(mode="json"))


def test_registered_as_an_electric_proxy_step() -> None:
    info = [i for i in available_steps() if i.name == "org_hmac"]
    assert [(i.distribution, i.target) for i in info] == [
        ("org-auth-plugin", "org_auth_plugin:OrgHmacAuth")
    ]
