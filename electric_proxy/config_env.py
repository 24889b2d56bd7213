"""Plain settings from the environment: ``ELECTRIC_PROXY_<SECTION>_<NAME>`` over the file.

A container platform sets the port, the upstream's address or the access-log format per
deployment, so one config file serves every environment. Only plain values come from there:
every ``[server]`` setting, ``[upstream] url`` and ``[metrics]`` host and port. A chain's
options do not: they are structured, and its secrets already come by ``{ "$env" = ... }``.

The variable is read as the setting's type would be written in TOML (``8080``, ``true``,
``2.5``, text as it is); the section's model then validates it like a value from the file,
and an error names the variable.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

__all__ = [
    "PREFIX",
    "apply_environment",
    "environment_name",
    "overridable_fields",
    "type_indirect_values",
]

PREFIX = "ELECTRIC_PROXY_"

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def environment_name(section: str, name: str) -> str:
    """``server``, ``port`` -> ``ELECTRIC_PROXY_SERVER_PORT``."""
    return f"{PREFIX}{section.upper()}_{name.upper()}"


def _scalar(annotation: Any) -> type | None:
    """The plain type a setting holds (``bool``, ``int``, ``float``, ``str``), else None;
    ``X | None`` counts as ``X`` and a ``Literal`` of strings as ``str``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        kinds = {_scalar(arg) for arg in args if arg is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    if origin is Literal:
        return str if all(isinstance(arg, str) for arg in args) else None
    return annotation if annotation in (bool, int, float, str) else None


def overridable_fields(model: type[BaseModel], names: tuple[str, ...] | None) -> list[str]:
    """The settings of ``model`` the environment may set: ``names``, or every plain one."""
    fields = model.model_fields
    chosen = list(fields) if names is None else list(names)
    return [name for name in chosen if _scalar(fields[name].annotation) is not None]


def _convert(kind: type, text: str) -> Any:
    if kind is bool:
        word = text.strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise ValueError("expected true or false")
    if kind in (int, float):
        try:
            return kind(text.strip())
        except ValueError:
            raise ValueError(
                "expected an integer" if kind is int else "expected a number"
            ) from None
    return text


def apply_environment(
    data: Mapping[str, Any],
    environ: Mapping[str, str],
    sections: Mapping[str, tuple[type[BaseModel], tuple[str, ...] | None]],
    problems: list[str],
) -> tuple[dict[str, Any], dict[str, str]]:
    """``data`` with the environment's settings written over the file's, and where each
    overridden setting came from (``"server.port" -> "ELECTRIC_PROXY_SERVER_PORT"``).

    ``sections`` maps a section to its model and the settings that may be overridden (None:
    every plain one). A variable for a section the file lacks creates it, as if written there.
    """
    merged = dict(data)
    sources: dict[str, str] = {}
    for section, (model, names) in sections.items():
        for name in overridable_fields(model, names):
            variable = environment_name(section, name)
            if variable not in environ:
                continue
            table = merged.get(section)
            if table is not None and not isinstance(table, Mapping):
                continue  # `server = 5` in the file: its own error says so
            kind = _scalar(model.model_fields[name].annotation)
            assert kind is not None  # overridable_fields keeps only plain settings
            try:
                value = _convert(kind, environ[variable])
            except ValueError as exc:
                # A plain setting is not a secret: quoting the value helps find the typo.
                problems.append(f"{variable}: {exc}, not {environ[variable]!r}")
                continue
            merged[section] = {**(table or {}), name: value}
            sources[f"{section}.{name}"] = variable
    return merged, sources


def _indirect(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) in ({"$env"}, {"$file"})


def type_indirect_values(
    raw: Mapping[str, Any],
    data: Mapping[str, Any],
    sections: Mapping[str, type[BaseModel]],
    problems: list[str],
) -> dict[str, Any]:
    """``data`` with each plain setting that the file gives by ``$env``/``$file`` read as its
    type: ``port = { "$env" = "PORT" }`` is the text ``"8080"`` until made the integer the
    section's strict model expects. ``sections`` maps a section's path (``streams.upstream``
    too) to its model."""
    typed = dict(data)
    for path, model in sections.items():
        head, _, tail = path.partition(".")
        raw_table, table = raw.get(head), typed.get(head)
        if tail:
            raw_table = raw_table.get(tail) if isinstance(raw_table, Mapping) else None
            table = table.get(tail) if isinstance(table, Mapping) else None
        if not isinstance(raw_table, Mapping) or not isinstance(table, Mapping):
            continue
        converted = dict(table)
        for name, value in table.items():
            field = model.model_fields.get(name)
            kind = _scalar(field.annotation) if field is not None else None
            if kind is None or not _indirect(raw_table.get(name)) or not isinstance(value, str):
                continue
            try:
                converted[name] = _convert(kind, value)
            except ValueError as exc:
                problems.append(f"{path}.{name}: {exc}")  # not the value: $file may be secret
        if tail:
            typed[head] = {**typed[head], tail: converted}
        else:
            typed[head] = converted
    return typed
