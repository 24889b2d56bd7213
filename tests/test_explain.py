"""The policy explainer: the decision serve would make, the URL it would send, secrets masked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from electric_proxy import (
    Decision,
    GatekeeperIssuer,
    Principal,
    ProxyConfig,
    explain,
    explain_async,
    parse_config,
)
from electric_proxy.testing import ALICE, RunningUpstream, auth
from electric_proxy.testing.cli import run_cli

SECRET = "upstream-secret-never-shown-1234"
ALICE_PRINCIPAL = Principal("alice", {"sub": "alice", "org_id": "acme"})


def raw_config(url: str = "http://127.0.0.1:3000/v1/shape", secret: str = SECRET) -> dict[str, Any]:
    return {
        "upstream": {"url": url},
        "chain": [
            {
                "use": "bearer",
                "tokens": [
                    {"token": ALICE, "sub": "alice", "claims": {"org_id": "acme"}},
                ],
            },
            {
                "use": "policy",
                "shapes": {
                    "todos": {
                        "where": "org_id = :org_id",
                        "columns": ["id", "org_id", "title", "done"],
                        "client_where": True,
                        "filter_columns": {"title": "text", "done": "bool"},
                    }
                },
            },
            {"use": "credentials", "secret": secret},
        ],
    }


@pytest.fixture
def config() -> ProxyConfig:
    return parse_config(raw_config())


def test_an_allowed_request_shows_the_combined_where_params_and_masked_url(
    config: ProxyConfig,
) -> None:
    decision = explain(
        config, ALICE_PRINCIPAL, "/v1/shape?table=todos&offset=-1&where=title = $1&params[1]=x"
    )
    assert decision == Decision(
        allowed=True,
        status=200,
        upstream_url=decision.upstream_url,
        where="org_id = $1 AND title = $2",
        params=("acme", "x"),
    )
    url = URL(decision.upstream_url or "")
    assert url.query["secret"] == "**********"
    assert url.query["table"] == "todos"
    assert url.query["where"] == "org_id = $1 AND title = $2"
    assert SECRET not in repr(decision)


@pytest.mark.parametrize(
    ("principal", "target", "status", "code"),
    [
        (ALICE_PRINCIPAL, "/v1/shape?table=users&offset=-1", 403, "shape_not_allowed"),
        (None, "/v1/shape?table=todos&offset=-1", 403, "missing_claim"),
        (Principal("eve"), "/v1/shape?table=todos&offset=-1", 403, "missing_claim"),
        (ALICE_PRINCIPAL, "/v1/shape?offset=-1&where=org_id <> 'x'", 400, "invalid_filter"),
    ],
)
def test_a_refusal_names_its_step_code_and_reason(
    config: ProxyConfig, principal: Principal | None, target: str, status: int, code: str
) -> None:
    decision = explain(config, principal, target)
    assert not decision.allowed
    assert (decision.status, decision.code, decision.step) == (status, code, "ShapePolicy")
    assert decision.reason
    assert decision.upstream_url is None


def test_the_endpoint_refuses_what_it_does_not_serve(config: ProxyConfig) -> None:
    wrong_path = explain(config, ALICE_PRINCIPAL, "/v1/%73hape?table=todos&offset=-1")
    assert (wrong_path.status, wrong_path.step) == (404, "endpoint")
    wrong_method = explain(config, ALICE_PRINCIPAL, "/v1/shape?offset=-1", method="PUT")
    assert (wrong_method.status, wrong_method.code) == (405, "method_not_allowed")


def test_a_post_subset_body_is_checked_like_serve_checks_it(config: ProxyConfig) -> None:
    body = json.dumps({"where": "salary > 0"}).encode()
    refused = explain(
        config, ALICE_PRINCIPAL, "/v1/shape?table=todos&offset=-1", method="POST", body=body
    )
    assert (refused.status, refused.code) == (400, "invalid_filter")


async def test_the_decision_is_what_serve_sends(
    config_client: Any, electric_upstream: RunningUpstream
) -> None:
    """The explained URL is the one a served proxy sends, byte for byte but the secret."""
    raw = raw_config(electric_upstream.url, electric_upstream.secret)
    target = "/v1/shape?table=todos&offset=-1&where=done = $1 AND title ILIKE $2"
    params = "&params[1]=false&params[2]=%25ship%25"
    client = await config_client(raw)
    resp = await client.get(URL(target + params, encoded=False), headers=auth(ALICE))
    assert resp.status == 200
    sent = electric_upstream.electric.requests[-1]

    decision = await explain_async(parse_config(raw), ALICE_PRINCIPAL, target + params)
    assert decision.allowed
    explained = URL(decision.upstream_url or "")
    assert explained.path == sent.path
    assert [(k, v) for k, v in explained.query.items() if k != "secret"] == [
        (k, v) for k, v in sent.query.items() if k != "secret"
    ]
    assert [m["value"]["title"] for m in await resp.json() if "value" in m] == ["Ship the proxy"]


async def test_explain_inside_a_running_loop_says_to_await_the_async_one(
    config: ProxyConfig,
) -> None:
    with pytest.raises(RuntimeError, match="explain_async"):
        explain(config, ALICE_PRINCIPAL, "/v1/shape?offset=-1")


def test_the_cli_prints_the_decision_and_never_the_secret(tmp_path: Path) -> None:
    toml = tmp_path / "proxy.toml"
    toml.write_text(
        """
[upstream]
url = "http://127.0.0.1:3000"

[[chain]]
use = "bearer"
tokens = [{ token = "token-alice-acme-0000001", sub = "alice", claims = { org_id = "acme" } }]

[[chain]]
use = "policy"
[chain.shapes.todos]
where = "org_id = :org_id"
columns = ["id", "title"]
client_where = true
filter_columns = { title = "text" }

[[chain]]
use = "credentials"
secret = { "$env" = "EXPLAIN_TEST_SECRET" }
"""
    )
    env = {"EXPLAIN_TEST_SECRET": SECRET}
    target = "/v1/shape?table=todos&offset=-1&where=title ILIKE $1&params[1]=%ship%"
    done = run_cli(
        "explain", "-c", str(toml), "--claims", '{"org_id":"acme"}', "--sub", "alice", target,
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "allowed"
    assert "secret=**********" in done.stdout
    assert "where:    org_id = $1 AND title ILIKE $2" in done.stdout
    assert '$2 = "%ship%"' in done.stdout
    assert SECRET not in done.stdout + done.stderr

    refused = run_cli("explain", "-c", str(toml), "--json", "--sub", "bob", target, env=env)
    assert refused.returncode == 2
    answer = json.loads(refused.stdout)
    assert answer["allowed"] is False
    assert (answer["status"], answer["code"], answer["step"]) == (
        403,
        "missing_claim",
        "ShapePolicy",
    )

    bad = run_cli("explain", "-c", str(toml), "--claims", "[1]", target, env=env)
    assert bad.returncode == 1
    assert "JSON object" in bad.stderr


async def test_sync_sends_it_to_electric_and_holds_the_rows(
    electric_upstream: RunningUpstream,
) -> None:
    target = "/v1/shape?table=todos&offset=-1"
    raw = raw_config(electric_upstream.url, electric_upstream.secret)
    dry = await explain_async(parse_config(raw), ALICE_PRINCIPAL, target)
    assert dry.allowed and dry.rows is None
    assert electric_upstream.electric.requests == []

    synced = await explain_async(parse_config(raw), ALICE_PRINCIPAL, target, sync=True)
    assert synced.allowed
    assert synced.upstream_url == dry.upstream_url
    assert synced.rows is not None
    assert sorted((r["id"], r["org_id"]) for r in synced.rows) == [("1", "acme"), ("2", "acme")]
    assert len(electric_upstream.electric.requests) == 1

    wrong = raw_config(electric_upstream.url, "not-the-secret-of-this-electric")
    refused = await explain_async(parse_config(wrong), ALICE_PRINCIPAL, target, sync=True)
    assert (refused.allowed, refused.step, refused.rows) == (False, "upstream", None)
    assert refused.status >= 400
    assert "not-the-secret" not in repr(refused)


def test_the_cli_refuses_bad_headers_and_a_config_without_shapes(tmp_path: Path) -> None:
    streams_only = tmp_path / "streams.toml"
    streams_only.write_text('[streams]\nupstream = { url = "http://127.0.0.1:4437/v1/stream" }\n')
    done = run_cli("explain", "-c", str(streams_only), "/v1/shape?offset=-1")
    assert done.returncode == 1
    assert "no shape endpoint" in done.stderr
    bad = run_cli("explain", "-c", str(streams_only), "-H", "no colon", "/v1/shape")
    assert bad.returncode == 1
    assert "Name: value" in bad.stderr
    both = run_cli("explain", "-c", str(streams_only), "--token", "t", "--sub", "a", "/v1/shape")
    assert both.returncode == 1
    assert "not both" in both.stderr


def test_every_secret_option_is_masked_whatever_its_parameter() -> None:
    raw = raw_config()
    raw["chain"][-1] = {
        "use": "credentials",
        "secret": SECRET,
        "source_id": "cloud-source-id-5551",
        "secret_param": "source_secret",
    }
    decision = explain(parse_config(raw), ALICE_PRINCIPAL, "/v1/shape?table=todos&offset=-1")
    query = URL(decision.upstream_url or "").query
    assert (query["source_secret"], query["source_id"]) == ("**********", "**********")
    assert "cloud-source-id-5551" not in repr(decision)


GATEKEEPER_KEY = "gatekeeper-secret-for-explain-0123456789abcdef"


def gatekeeper_config() -> ProxyConfig:
    return parse_config(
        {
            "upstream": {"url": "http://127.0.0.1:3000/v1/shape"},
            "chain": [
                {"use": "gatekeeper", "algorithms": ["HS256"], "secret": GATEKEEPER_KEY},
                {"use": "credentials", "secret": SECRET},
            ],
        }
    )


def test_authenticate_explains_a_gatekeeper_token_with_its_grant() -> None:
    issuer = GatekeeperIssuer(key=GATEKEEPER_KEY, url="/v1/shape", ttl=60)
    token = issuer.mint({"table": "todos", "where": "org_id = $1", "params": ["acme"]}, "alice")
    headers = {"Authorization": f"Bearer {token}"}
    target = "/v1/shape?table=todos&offset=-1&where=org_id = $1&params[1]={org}"
    config = gatekeeper_config()

    granted = explain(config, None, target.format(org="acme"), headers=headers, authenticate=True)
    assert (granted.allowed, granted.where, granted.params) == (True, "org_id = $1", ("acme",))
    other = explain(config, None, target.format(org="globex"), headers=headers, authenticate=True)
    assert (other.allowed, other.step, other.code) == (
        False,
        "GatekeeperVerifier",
        "shape_not_allowed",
    )
    no_token = explain(config, None, target.format(org="acme"), authenticate=True)
    assert (no_token.status, no_token.step) == (401, "GatekeeperVerifier")
    with pytest.raises(ValueError, match="pass None"):
        explain(config, ALICE_PRINCIPAL, target, authenticate=True)
