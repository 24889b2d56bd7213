"""The example org plugin, installed as its own distribution, works like a built-in step.

CI installs it before pytest (``pip install -e examples/org_auth_plugin``). Without it these
tests fail, on purpose: skipping would hide that the entry-point path is no longer tested.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from electric_proxy import available_steps, load_config
from electric_proxy.testing import RunningUpstream, run_cli

PLUGIN_DIR = Path(__file__).parent.parent / "examples" / "org_auth_plugin"
PROJECT = tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text())["project"]
STEP = "org_hmac"
K1 = "retired-org-key-0123456789abcdef-0123"
K2 = "current-org-key-0123456789abcdef-0123"


def require_plugin() -> None:
    if not [i for i in available_steps() if i.name == STEP]:
        pytest.fail(
            "the example plugin is not installed; run "
            "`pip install -e examples/org_auth_plugin` before pytest (CI does)",
            pytrace=False,
        )


def org_auth(keyid: str, secret: str, sub: str, org: str) -> dict[str, str]:
    """The header as the plugin's README specifies it, computed independently of the plugin."""
    ts = int(time.time())
    message = f"org-auth-v1\n{keyid}\n{ts}\n{sub}\n{org}".encode()
    sig = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return {"X-Org-Auth": f"keyid={keyid};ts={ts};sub={sub};org={org};sig={sig}"}


def write_config(path: Path, upstream: RunningUpstream) -> Path:
    config = path / "proxy.toml"
    config.write_text(
        f"""
[upstream]
url = "{upstream.url}"

[[chain]]
use = "{STEP}"
keys = {{ k2 = {{ "$env" = "ORG_KEY_K2" }} }}
max_skew = 60

[[chain]]
use = "policy"
shapes.todos.where = "org_id = :org_id"

[[chain]]
use = "credentials"
secret = {{ "$env" = "ELECTRIC_SECRET" }}
"""
    )
    return config


def test_plugins_lists_it_with_its_distribution_and_version() -> None:
    require_plugin()
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert [STEP, PROJECT["name"], PROJECT["version"], "org_auth_plugin:OrgHmacAuth"] in rows


async def test_a_config_naming_it_works_end_to_end(
    aiohttp_client: Any,
    electric_upstream: RunningUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_plugin()
    monkeypatch.setenv("ORG_KEY_K2", K2)
    monkeypatch.setenv("ELECTRIC_SECRET", electric_upstream.secret)
    config = load_config(write_config(tmp_path, electric_upstream))
    assert [name for name, _ in config.steps] == [STEP, "policy", "credentials"]
    client = await aiohttp_client(config.build().app())

    resp = await client.get("/v1/shape?offset=-1", headers=org_auth("k2", K2, "alice", "acme"))
    assert resp.status == 200, await resp.text()
    rows = [m["value"] for m in await resp.json() if "value" in m]
    assert rows and {r["org_id"] for r in rows} == {"acme"}
    sent = electric_upstream.electric.requests[-1].query
    assert sent["params[1]"] == "acme" and sent["secret"] == electric_upstream.secret

    electric_upstream.electric.requests.clear()
    bad_signature = org_auth("k2", "not-the-key-0123456789abcdef-0123456", "alice", "acme")
    rotated_out = org_auth("k1", K1, "alice", "acme")
    for headers in (bad_signature, rotated_out):
        resp = await client.get("/v1/shape?offset=-1", headers=headers)
        assert resp.status == 401
        assert (await resp.json())["error"] == "invalid_token"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
    assert electric_upstream.electric.requests == []


def test_check_config_accepts_it_and_masks_its_keys(
    electric_upstream: RunningUpstream, tmp_path: Path
) -> None:
    require_plugin()
    path = write_config(tmp_path, electric_upstream)
    env = {"ORG_KEY_K2": K2, "ELECTRIC_SECRET": electric_upstream.secret}
    result = run_cli("check-config", str(path), "--show", env=env)
    assert result.returncode == 0, result.stderr
    assert f"chain: {STEP}, policy, credentials" in result.stdout
    assert K2 not in result.stdout and K2 not in result.stderr
    shown = tomllib.loads(result.stdout)
    assert shown["chain"][0]["keys"] == {"k2": "**********"}
