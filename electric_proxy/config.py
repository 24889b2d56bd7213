"""Load a proxy from TOML: secrets by indirection, every error with its option path.

    [server]
    host = "127.0.0.1"
    port = 8080

    [upstream]
    url = "http://localhost:3000/v1/shape"

    [[chain]]
    use = "credentials"
    secret = { "$env" = "ELECTRIC_SECRET" }

Any value may be ``{ "$env" = "NAME" }`` or ``{ "$file" = "path" }`` so secrets never sit
in the file. Steps are built in the order of ``[[chain]]`` entries, which is the order they
run in. Secret options are ``SecretStr`` and print masked wherever config is shown.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .app import ShapeProxy
from .chain import Step
from .forward import UpstreamSettings
from .registry import RegistryError, build_step

__all__ = ["ConfigError", "ProxyConfig", "ServerSettings", "load_config", "parse_config"]


class ConfigError(Exception):
    """Why a config cannot be used: one line per problem, each naming where it is."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class ServerSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    path: str = "/v1/shape"
    shutdown_timeout: float = Field(10.0, ge=0)


@dataclass(frozen=True)
class ProxyConfig:
    server: ServerSettings
    upstream: UpstreamSettings
    steps: tuple[tuple[str, Step], ...]

    def build(self) -> ShapeProxy:
        return ShapeProxy(
            upstream=self.upstream,
            chain=[step for _, step in self.steps],
            path=self.server.path,
        )

    def describe(self) -> dict[str, Any]:
        """The effective config with secrets masked: safe to print or log."""
        return {
            "server": self.server.model_dump(mode="json"),
            "upstream": self.upstream.model_dump(mode="json"),
            "chain": [{"use": name, **step.model_dump(mode="json")} for name, step in self.steps],
        }


def _where(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _resolve(value: Any, path: tuple[str | int, ...], base: Path, problems: list[str]) -> Any:
    if isinstance(value, Mapping):
        if set(value) == {"$env"}:
            name = value["$env"]
            if not isinstance(name, str) or name not in os.environ:
                problems.append(f"{_where(path)}: environment variable {name!r} is not set")
                return None
            return os.environ[name]
        if set(value) == {"$file"}:
            file = base / str(value["$file"])
            try:
                return file.read_text().rstrip("\r\n")
            except OSError as exc:
                problems.append(f"{_where(path)}: cannot read {file}: {exc.strerror}")
                return None
        return {k: _resolve(v, (*path, k), base, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, (*path, i), base, problems) for i, v in enumerate(value)]
    return value


def _validation_problems(prefix: str, exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"])
        problems.append(f"{prefix}{'.' + loc if loc else ''}: {err['msg']}")
    return problems


def parse_config(raw: Mapping[str, Any], *, base: Path = Path()) -> ProxyConfig:
    problems: list[str] = []
    data = _resolve(raw, (), base, problems)
    unknown = sorted(set(data) - {"server", "upstream", "chain"})
    problems += [f"{key}: unknown section (expected server, upstream, chain)" for key in unknown]

    server: ServerSettings | None = None
    upstream: UpstreamSettings | None = None
    try:
        server = ServerSettings.model_validate(data.get("server", {}))
    except ValidationError as exc:
        problems += _validation_problems("server", exc)
    try:
        upstream = UpstreamSettings.model_validate(data.get("upstream", {}))
    except ValidationError as exc:
        problems += _validation_problems("upstream", exc)

    steps: list[tuple[str, Step]] = []
    chain = data.get("chain", [])
    if not isinstance(chain, list):
        problems.append("chain: expected a list of [[chain]] tables")
        chain = []
    for index, entry in enumerate(chain):
        where = f"chain[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("use"), str):
            problems.append(f'{where}: expected a table with `use = "<step name>"`')
            continue
        name = entry["use"]
        options = {k: v for k, v in entry.items() if k != "use"}
        try:
            steps.append((name, build_step(name, options)))
        except RegistryError as exc:
            problems.append(f"{where}: {exc}")
        except ValidationError as exc:
            problems += _validation_problems(f"{where} ({name})", exc)
        except (TypeError, ValueError) as exc:
            problems.append(f"{where} ({name}): {exc}")

    if problems or server is None or upstream is None:
        raise ConfigError(problems)
    return ProxyConfig(server=server, upstream=upstream, steps=tuple(steps))


def load_config(path: str | os.PathLike[str]) -> ProxyConfig:
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text())
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: not valid TOML: {exc}"]) from None
    return parse_config(raw, base=file.parent)
