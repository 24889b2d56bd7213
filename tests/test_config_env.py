"""ELECTRIC_PROXY_<SECTION>_<NAME>: plain settings from the environment, over the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from electric_proxy import ConfigError, parse_config
from electric_proxy.config import ENVIRONMENT_SETTINGS, ServerSettings, load_config
from electric_proxy.config_env import environment_name, overridable_fields

README = (Path(__file__).parent.parent / "README.md").read_text()
FILE = {"server": {"port": 9000, "host": "10.0.0.1"}, "upstream": {"url": "http://file:3000"}}


def test_the_environment_wins_over_the_file_and_its_source_is_kept() -> None:
    environ = {
        "ELECTRIC_PROXY_SERVER_PORT": "8081",
        "ELECTRIC_PROXY_SERVER_ACCESS_LOG": "json",
        "ELECTRIC_PROXY_SERVER_COALESCE_LIVE": "false",
        "ELECTRIC_PROXY_SERVER_SHUTDOWN_TIMEOUT": "2.5",
        "ELECTRIC_PROXY_UPSTREAM_URL": "http://env:3000/v1/shape",
        "ELECTRIC_PROXY_METRICS_PORT": "9470",
    }
    config = parse_config(FILE, environ=environ)
    assert config.server.port == 8081
    assert config.server.host == "10.0.0.1"  # the file's, where the environment is silent
    assert config.server.access_log == "json"
    assert config.server.coalesce_live is False
    assert config.server.shutdown_timeout == 2.5
    assert config.upstream is not None and config.upstream.url == "http://env:3000/v1/shape"
    # A variable for a section the file lacks creates it, as if written there.
    assert config.metrics is not None and config.metrics.port == 9470
    assert config.sources["server.port"] == "ELECTRIC_PROXY_SERVER_PORT"
    assert config.sources["server.host"] == "file"
    assert "server.backlog" not in config.sources  # the default


def test_no_environment_is_read_unless_asked() -> None:
    config = parse_config(FILE)
    assert config.server.port == 9000


def test_load_config_reads_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text('[upstream]\nurl = "http://file:3000"\n')
    monkeypatch.setenv("ELECTRIC_PROXY_SERVER_PORT", "7000")
    assert load_config(path).server.port == 7000
    assert load_config(path, environ={}).server.port == 8080


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ELECTRIC_PROXY_SERVER_PORT", "80a", "ELECTRIC_PROXY_SERVER_PORT: expected an integer"),
        ("ELECTRIC_PROXY_SERVER_TUNE_GC", "maybe", "expected true or false, not 'maybe'"),
        ("ELECTRIC_PROXY_SERVER_PORT", "70000", "server.port: Input should be less than"),
        ("ELECTRIC_PROXY_SERVER_ACCESS_LOG", "xml", "server.access_log: Input should be"),
        ("ELECTRIC_PROXY_UPSTREAM_URL", "ftp://x", "upstream.url: expected an http://"),
    ],
)
def test_a_bad_variable_is_a_config_error(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(FILE, environ={variable: value})
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_only_plain_settings_are_overridable() -> None:
    """A chain's options never come from ELECTRIC_PROXY_*: they have $env, and structure."""
    config = parse_config(
        {**FILE, "chain": [{"use": "credentials", "secret": "file-secret"}]},
        environ={"ELECTRIC_PROXY_CHAIN_SECRET": "x", "ELECTRIC_PROXY_UPSTREAM_READ_TIMEOUT": "1"},
    )
    assert config.upstream is not None and config.upstream.read_timeout == 90.0
    assert overridable_fields(ServerSettings, None) == list(ServerSettings.model_fields)


def test_every_variable_is_in_the_readme_table() -> None:
    """Documentation kept honest: a new [server] setting needs its row."""
    rows = set(re.findall(r"^\| `(ELECTRIC_PROXY_[A-Z_]+)` \|", README, re.MULTILINE))
    expected = {
        environment_name(section, name)
        for section, (model, names) in ENVIRONMENT_SETTINGS.items()
        for name in overridable_fields(model, names)
    }
    assert rows == expected


def test_env_and_file_indirection_of_a_number_is_read_as_a_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Strict sections still take `port = { "$env" = "PORT" }`: the text is typed first."""
    (tmp_path / "timeout").write_text("3.5\n")
    monkeypatch.setenv("PORT", "8123")
    monkeypatch.setenv("GC", "false")
    raw = {
        "server": {"port": {"$env": "PORT"}, "tune_gc": {"$env": "GC"}},
        "upstream": {"url": "http://e:3000", "read_timeout": {"$file": "timeout"}},
        "streams": {"upstream": {"url": "http://s:4437", "connection_limit": {"$env": "PORT"}}},
    }
    config = parse_config(raw, base=tmp_path)
    assert (config.server.port, config.server.tune_gc) == (8123, False)
    assert config.upstream is not None and config.upstream.read_timeout == 3.5
    assert config.streams is not None and config.streams.upstream.connection_limit == 8123
    assert config.sources["server.port"] == "$env PORT"
    monkeypatch.setenv("PORT", "http")
    with pytest.raises(ConfigError) as info:
        parse_config(raw, base=tmp_path)
    assert "server.port: expected an integer" in info.value.problems
