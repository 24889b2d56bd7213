"""Installed as its own distribution, ``rate_limit`` is a step like the built-in ones: found
through the entry point, configured from TOML, its Redis URL a secret.

``pip install -e plugins/electric-proxy-ratelimit`` must run before pytest; without it these
tests fail rather than skip, so a lost entry point cannot go unnoticed.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from electric_proxy_ratelimit import RateLimit
from ratelimit_support import SHAPE

from electric_proxy import ConfigError, available_steps, load_config, parse_config
from electric_proxy.testing import ALICE, BOB, RunningUpstream, auth, run_cli

PLUGIN_DIR = Path(__file__).parent.parent
PROJECT = tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text())["project"]
STEP = "rate_limit"
PASSWORD = "redis-password-7c1e0b"


def require_plugin() -> None:
    if not [i for i in available_steps() if i.name == STEP]:
        pytest.fail(
            "electric-proxy-ratelimit is not installed; run "
            "`pip install -e plugins/electric-proxy-ratelimit` before pytest",
            pytrace=False,
        )


def write_config(directory: Path, upstream_url: str, limiter: str) -> Path:
    path = directory / "proxy.toml"
    path.write_text(
        f"""
[upstream]
url = "{upstream_url}"

[[chain]]
use = "bearer"
tokens = [
  {{ token = "{ALICE}", sub = "alice", claims = {{ org_id = "acme" }} }},
  {{ token = "{BOB}", sub = "bob", claims = {{ org_id = "globex" }} }},
]

[[chain]]
use = "{STEP}"
{limiter}

[[chain]]
use = "policy"
shapes.todos.where = "org_id = :org_id"

[[chain]]
use = "credentials"
secret = {{ "$env" = "ELECTRIC_SECRET" }}
"""
    )
    return path


def test_listed_with_its_distribution_and_version() -> None:
    require_plugin()
    info = [i for i in available_steps() if i.name == STEP]
    assert [(i.distribution, i.version, i.target) for i in info] == [
        (PROJECT["name"], PROJECT["version"], "electric_proxy_ratelimit:RateLimit")
    ]


async def test_a_toml_config_naming_it_works_end_to_end(
    aiohttp_client: Any,
    electric_upstream: RunningUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_plugin()
    monkeypatch.setenv("ELECTRIC_SECRET", electric_upstream.secret)
    limiter = 'rate = 0.5\nburst = 2\nmax_live = 3\nroutes."/v1/shape" = { burst = 3 }'
    config = load_config(write_config(tmp_path, electric_upstream.url, limiter))
    assert [name for name, _ in config.steps] == ["bearer", STEP, "policy", "credentials"]
    step = config.steps[1][1]
    assert isinstance(step, RateLimit) and step.backend == "memory"
    client = await aiohttp_client(config.build().app())

    statuses = []
    for _ in range(4):
        resp = await client.get(SHAPE, params={"offset": "-1"}, headers=auth(ALICE))
        statuses.append(resp.status)
    assert statuses == [200, 200, 200, 429]  # the route's burst of 3, not the step's 2
    assert resp.headers["Retry-After"] == "2"
    assert (await client.get(SHAPE, params={"offset": "-1"}, headers=auth(BOB))).status == 200


@pytest.mark.parametrize("source", ["env", "file"])
def test_the_redis_url_is_a_secret_read_indirectly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    require_plugin()
    url = f"redis://:{PASSWORD}@redis.internal:6379/2"
    monkeypatch.setenv("ELECTRIC_SECRET", "electric-secret")
    if source == "env":
        monkeypatch.setenv("RATELIMIT_REDIS_URL", url)
        reference = '{ "$env" = "RATELIMIT_REDIS_URL" }'
    else:
        (tmp_path / "redis.url").write_text(url + "\n")
        reference = '{ "$file" = "redis.url" }'
    limiter = f'backend = "redis"\nredis_url = {reference}\non_backend_error = "allow"'
    config = load_config(write_config(tmp_path, "http://electric:3000/v1/shape", limiter))
    step = config.steps[1][1]
    assert isinstance(step, RateLimit) and step.redis_url is not None
    assert step.redis_url.get_secret_value() == url
    shown = json.dumps(config.describe())
    assert PASSWORD not in shown and PASSWORD not in repr(step)
    assert config.describe()["chain"][1]["redis_url"] == "**********"


def test_check_config_shows_it_masked(electric_upstream: RunningUpstream, tmp_path: Path) -> None:
    require_plugin()
    limiter = 'backend = "redis"\nredis_url = { "$env" = "RATELIMIT_REDIS_URL" }'
    path = write_config(tmp_path, electric_upstream.url, limiter)
    env = {
        "ELECTRIC_SECRET": electric_upstream.secret,
        "RATELIMIT_REDIS_URL": f"rediss://:{PASSWORD}@redis.internal:6380/0",
    }
    result = run_cli("check-config", str(path), "--show", env=env)
    assert result.returncode == 0, result.stderr
    assert f"chain: bearer, {STEP}, policy, credentials" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


GOOD: dict[str, Any] = {
    "upstream": {"url": "http://electric:3000/v1/shape"},
    "chain": [{"use": "bearer", "tokens": []}, {"use": STEP}],
}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"rate": 0}, "chain[1] (rate_limit).rate: Input should be greater than 0"),
        ({"burst": 0}, "chain[1] (rate_limit).burst: Input should be greater than or equal to 1"),
        ({"max_live": 0}, "chain[1] (rate_limit).max_live: Input should be greater than or"),
        ({"backend": "memcached"}, "chain[1] (rate_limit).backend: Input should be 'memory'"),
        ({"backend": "redis"}, "chain[1] (rate_limit): backend 'redis' needs"),
        (
            {"redis_url": f"redis://:{PASSWORD}@h/0"},
            "chain[1] (rate_limit): redis_url is only used with backend 'redis'",
        ),
        (
            {"backend": "redis", "redis_url": f"https://:{PASSWORD}@h/0"},
            "chain[1] (rate_limit).redis_url: expected a redis://",
        ),
        (
            {"backend": "redis", "redis_url": f"redis://:{PASSWORD}@h:port/0"},
            "chain[1] (rate_limit).redis_url: not a valid Redis URL",
        ),
        ({"routes": {"v1/shape": {}}}, "chain[1] (rate_limit).routes: route"),
        ({"routes": {"/v1/shape": {"rate": -1}}}, "chain[1] (rate_limit).routes./v1/shape.rate"),
        ({"on_backend_error": "ignore"}, "chain[1] (rate_limit).on_backend_error: Input should"),
        ({"window": 60}, "chain[1] (rate_limit).window: unknown option 'window'"),
    ],
)
def test_bad_options_stop_start_up_with_their_path(options: dict[str, Any], expected: str) -> None:
    require_plugin()
    config = json.loads(json.dumps(GOOD))
    config["chain"][1].update(options)
    with pytest.raises(ConfigError) as info:
        parse_config(config)
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems
    assert PASSWORD not in str(info.value)
