"""Config files: indirection for secrets, option paths in every error, masking."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from electric_proxy import (
    BearerAuth,
    ConfigError,
    Credentials,
    ShapePolicy,
    ShapeProxy,
    parse_config,
)
from electric_proxy.config import load_config

GOOD = {
    "server": {"port": 9000},
    "upstream": {"url": "http://electric:3000"},
    "chain": [
        {"use": "bearer", "tokens": [{"token": {"$env": "ALICE_TOKEN"}, "sub": "alice"}]},
        {"use": "policy", "shapes": {"todos": {"where": "org_id = :org_id"}}},
        {"use": "credentials", "secret": {"$file": "electric.secret"}},
    ],
}


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "electric.secret").write_text("file-secret-value-123\n")
    monkeypatch.setenv("ALICE_TOKEN", "env-token-value-4567890")
    return tmp_path


def test_builds_the_chain_in_config_order(secrets: Path) -> None:
    config = parse_config(GOOD, base=secrets)
    assert [name for name, _ in config.steps] == ["bearer", "policy", "credentials"]
    assert [type(step) for _, step in config.steps] == [BearerAuth, ShapePolicy, Credentials]
    assert str(config.build().forwarder.url) == "http://electric:3000/v1/shape"
    assert config.server.port == 9000
    credentials = config.steps[2][1]
    assert isinstance(credentials, Credentials) and credentials.secret is not None
    assert credentials.secret.get_secret_value() == "file-secret-value-123"


def test_describe_masks_every_secret(secrets: Path) -> None:
    shown = json.dumps(parse_config(GOOD, base=secrets).describe())
    assert "file-secret-value-123" not in shown
    assert "env-token-value-4567890" not in shown
    assert "**********" in shown


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda c: c["chain"][1]["shapes"]["todos"].update(replica="half"),
            "chain[1] (policy).shapes.todos.replica: Input should be 'default' or 'full'",
        ),
        (
            lambda c: c["chain"][1]["shapes"]["todos"].update(where="org_id = ("),
            "chain[1] (policy).shapes.todos.where: invalid row filter",
        ),
        (
            lambda c: c["chain"][2].update(secret_param="password"),
            "chain[2] (credentials).secret_param: Input should be",
        ),
        (
            lambda c: c["chain"][2].update(colour="blue"),
            "chain[2] (credentials).colour: unknown option 'colour'",
        ),
        (
            lambda c: c["chain"].append({"use": "nope"}),
            "chain[3]: no step named 'nope' is installed",
        ),
        (lambda c: c["chain"].append({"tokens": []}), "chain[3]: expected a table with `use"),
        (
            lambda c: c["chain"][0]["tokens"][0].update(token={"$env": "MISSING_VAR_X"}),
            "chain[0].tokens[0].token: environment variable 'MISSING_VAR_X' is not set",
        ),
        (
            lambda c: c["upstream"].update(url="ftp://x"),
            "upstream.url: expected an http:// or https:// URL",
        ),
        (
            lambda c: c["upstream"].update(url="http://e:3000/v1/shape?secret=x"),
            "upstream.url: the upstream URL must not carry a query",
        ),
        (lambda c: c.update(extra={}), "extra: unknown section"),
        (
            # Would parse as `org_id = :org - id` and refuse everyone at run time.
            lambda c: c["chain"][1]["shapes"]["todos"].update(where="org_id = :org-id"),
            "chain[1] (policy).shapes.todos.where: invalid row filter: ':org-id' is not one "
            "placeholder",
        ),
    ],
)
def test_errors_name_the_step_and_option_path(secrets: Path, change: Any, expected: str) -> None:
    config = json.loads(json.dumps(GOOD))
    change(config)
    with pytest.raises(ConfigError) as info:
        parse_config(config, base=secrets)
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


def test_errors_never_echo_secret_values(secrets: Path) -> None:
    config = json.loads(json.dumps(GOOD))
    config["chain"][0]["tokens"][0]["token"] = "short"
    with pytest.raises(ConfigError) as info:
        parse_config(config, base=secrets)
    assert "short" not in str(info.value)
    assert "chain[0] (bearer).tokens[0].token: expected at least 16 characters" in str(info.value)


def test_load_config_reads_toml(secrets: Path) -> None:
    path = secrets / "proxy.toml"
    path.write_text(
        '[upstream]\nurl = "http://localhost:3000/v1/shape"\n\n'
        '[[chain]]\nuse = "credentials"\nsecret = { "$file" = "electric.secret" }\n'
    )
    config = load_config(path)
    assert [name for name, _ in config.steps] == ["credentials"]
    path.write_text("[upstream\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


BAD_ROUTE_PATHS = [
    ("v1/shape", "starting with '/'"),
    ("/v1/shape/", "not ending with '/'"),
    ("/v1/{table}", "'{' and '}' are not allowed"),
    ("/v1/shape?table=todos", "no query or fragment"),
    ("/v1/shape#top", "no query or fragment"),
    ("/v1//shape", "no empty, '.' or '..' segments"),
    ("/v1/./shape", "no empty, '.' or '..' segments"),
    ("/v1/../shape", "no empty, '.' or '..' segments"),
    ("/v1/sh ape", "no spaces, no '%' escapes"),
    ("/v1/%73hape", "no spaces, no '%' escapes"),
    ("/v1/café", "no spaces, no '%' escapes"),
]


@pytest.mark.parametrize(("path", "reason"), BAD_ROUTE_PATHS)
def test_server_path_is_checked_with_its_option_path(path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"server": {"path": path}, "upstream": {"url": "http://e:3000"}})
    [problem] = info.value.problems
    assert problem.startswith("server.path: expected a path like /v1/shape")
    assert reason in problem


@pytest.mark.parametrize(("path", "reason"), [*BAD_ROUTE_PATHS, ("/", "not ending with '/'")])
def test_streams_path_is_checked_with_its_option_path(path: str, reason: str) -> None:
    streams = {"path": path, "upstream": {"url": "http://streams:4437/v1/stream"}}
    with pytest.raises(ConfigError) as info:
        parse_config({"streams": streams})
    [problem] = info.value.problems
    assert problem.startswith("streams.path: expected a path like /v1/stream")
    assert reason in problem


def test_the_shape_route_may_not_sit_under_the_streams_prefix() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "server": {"path": "/v1/stream/shape"},
                "upstream": {"url": "http://e:3000"},
                "streams": {"upstream": {"url": "http://streams:4437/v1/stream"}},
            }
        )
    assert info.value.problems == [
        "server.path: /v1/stream/shape is under streams.path /v1/stream; choose another path"
    ]


@pytest.mark.parametrize("path", ["/", "/shape", "/api/v1/shape", "/api/v1:shape@eu-1.(x)"])
async def test_an_accepted_shape_path_is_served_at_exactly_those_bytes(
    path: str, aiohttp_client: Any
) -> None:
    config = parse_config(
        {
            "server": {"path": path},
            "upstream": {"url": "http://127.0.0.1:1/v1/shape", "connect_timeout": 0.5},
            "health": {"enabled": False},
        }
    )
    client = await aiohttp_client(config.app())
    async with client.get(path, params={"table": "todos", "offset": "-1"}) as response:
        assert response.status == 502  # routed, then forwarded to nothing
    async with client.get(path + "x") as response:
        assert response.status == 404


async def test_a_refused_path_is_one_no_client_could_reach(aiohttp_client: Any) -> None:
    """Why spaces are refused: the route matches raw bytes, and a client sends ``%20``."""
    client = await aiohttp_client(ShapeProxy(upstream="http://127.0.0.1:1", path="/a b").app())
    async with client.get("/a%20b", params={"offset": "-1"}) as response:
        assert response.status == 404


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # An extra key is a typo until shown otherwise: name it and the option it looks like.
        (
            {"chain": [{"use": "bearer", "tokns": []}]},
            "chain[0] (bearer).tokns: unknown option 'tokns', did you mean 'tokens'?",
        ),
        (
            {"chain": [{"use": "policy", "shapes": {"todos": {"wher": "a = 1"}}}]},
            "chain[0] (policy).shapes.todos.wher: unknown option 'wher', did you mean 'where'?",
        ),
        (
            {
                "chain": [
                    {"use": "bearer", "tokens": [{"token": "t" * 20, "sub": "a", "clams": {}}]}
                ]
            },
            "chain[0] (bearer).tokens[0].clams: unknown option 'clams', did you mean 'claims'?",
        ),
        ({"server": {"hots": "::"}}, "server.hots: unknown option 'hots', did you mean 'host'?"),
        ({"sever": {}}, "sever: unknown section, did you mean 'server'?"),
        (
            {"chain": [{"use": "polcy"}]},
            "chain[0]: no step named 'polcy' is installed; did you mean",
        ),
        # A secret's length is in characters, not pydantic's "items".
        (
            {"chain": [{"use": "bearer", "tokens": [{"token": "short", "sub": "a"}]}]},
            "chain[0] (bearer).tokens[0].token: expected at least 16 characters",
        ),
        # TOML has numbers and booleans; a quoted one is a mistake, not a string to coerce.
        (
            {"server": {"port": "8080"}},
            "server.port: expected an integer, not a string (write it without quotes)",
        ),
        ({"server": {"coalesce_live": "yes"}}, "server.coalesce_live: expected true or false"),
        ({"server": {"backlog": 1.5}}, "server.backlog: expected an integer, not a number"),
        ({"metrics": {"port": "9464"}}, "metrics.port: expected an integer, not a string"),
        ({"health": {"timeout": "2"}}, "health.timeout: expected a number, not a string"),
        ({"chain": [{"use": "jwt"}]}, "chain[0] (jwt).algorithms: required option is missing"),
    ],
)
def test_errors_speak_the_config_authors_language(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"upstream": {"url": "http://electric:3000"}, **raw})
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems
    assert not any("Value error" in p or "pydantic" in p for p in info.value.problems)


def test_a_secrets_value_is_never_quoted_in_a_type_error() -> None:
    raw = {"upstream": {"url": "http://e:3000"}, "chain": [{"use": "credentials", "secret": 12345}]}
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert "12345" not in str(info.value)
