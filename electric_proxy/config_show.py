"""``check-config --show``: the effective config as TOML, each setting with where it came from.

The output is a config file an operator can read, diff and keep: the same sections as the
input, every default spelled out, secrets masked (``**********``, so the output cannot be
used as is where a secret is required), and after each top-level setting a comment saying
whether it came from an ``ELECTRIC_PROXY_...`` variable, the file (or its ``$env``/``$file``
indirection) or the default.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from .config import ProxyConfig

__all__ = ["show_toml"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def _value(value: Any) -> str:
    """One TOML value; inline tables and arrays for nested data. ``None`` has no TOML
    spelling: callers leave those keys out."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, Mapping):
        items = [f"{_key(str(k))} = {_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value if v is not None) + "]"
    return json.dumps(str(value))


def _source(config: ProxyConfig, path: str) -> str:
    source = config.sources.get(path)
    if source is None:
        return "default"
    return "from the file" if source == "file" else f"from {source}"


def _table(header: str, values: Mapping[str, Any], path: str, config: ProxyConfig) -> list[str]:
    lines = [header]
    for name, value in values.items():
        source = _source(config, f"{path}.{name}")
        if value is None:
            lines.append(f"# {_key(name)} is not set  # {source}")
        else:
            lines.append(f"{_key(name)} = {_value(value)}  # {source}")
    return [*lines, ""]


def _chain(header: str, entries: list[dict[str, Any]], path: str, config: ProxyConfig) -> list[str]:
    lines: list[str] = []
    for index, entry in enumerate(entries):
        lines += _table(header, entry, f"{path}[{index}]", config)
    return lines


def show_toml(config: ProxyConfig) -> str:
    """``config`` as TOML with secrets masked and a source comment on each setting."""
    shown = config.describe()
    lines: list[str] = []
    for section in ("server", "upstream", "health", "metrics", "admin", "revocation", "audit"):
        if section in shown:
            lines += _table(f"[{section}]", shown[section], section, config)
    if "chain" in shown:
        lines += _chain("[[chain]]", shown["chain"], "chain", config)
    streams = shown.get("streams")
    if streams is not None:
        lines += _table("[streams]", {"path": streams["path"]}, "streams", config)
        lines += _table("[streams.upstream]", streams["upstream"], "streams.upstream", config)
        lines += _chain("[[streams.chain]]", streams["chain"], "streams.chain", config)
    return "\n".join(lines).rstrip("\n") + "\n"
