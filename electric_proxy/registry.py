"""Find chain steps through the ``electric_proxy.middleware`` entry-point group.

Built-in steps register through the same group from this project's own metadata, so core
and third-party steps take one path. Entry points only make a step *available*; the config
makes it *active*, in the config's order.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .chain import Step
from .errors import ElectricProxyError

__all__ = [
    "ENTRY_POINT_GROUP",
    "RegistryError",
    "StepInfo",
    "available_steps",
    "build_step",
    "load_step_class",
]

ENTRY_POINT_GROUP = "electric_proxy.middleware"


class RegistryError(ElectricProxyError):
    """A step that cannot be found, loaded or built; the message names it."""


@dataclass(frozen=True, slots=True)
class StepInfo:
    name: str
    distribution: str
    version: str
    target: str
    entry_point: EntryPoint


def available_steps() -> list[StepInfo]:
    """Every registered step, sorted by name (several distributions may claim one name)."""
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        found.append(
            StepInfo(
                name=ep.name,
                distribution=dist.name if dist else "?",
                version=dist.version if dist else "?",
                target=ep.value,
                entry_point=ep,
            )
        )
    return sorted(found, key=lambda i: (i.name, i.distribution))


def load_step_class(name: str) -> type[Step]:
    matches = [i for i in available_steps() if i.name == name]
    if not matches:
        names = sorted({i.name for i in available_steps()})
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(names) or "none"
        raise RegistryError(f"no step named {name!r} is installed{hint} (available: {known})")
    if len(matches) > 1:
        owners = ", ".join(i.distribution for i in matches)
        raise RegistryError(f"step {name!r} is registered by several distributions: {owners}")
    info = matches[0]
    try:
        cls = info.entry_point.load()
    except Exception as exc:
        raise RegistryError(
            f"step {name!r} from {info.distribution} {info.version} failed to load: {exc!r}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Step)):
        raise RegistryError(f"step {name!r} ({info.target}) is not an electric_proxy.Step")
    return cls


def build_step(name: str, options: Mapping[str, Any]) -> Step:
    """Construct a step from config options; ``ValidationError`` carries the option paths."""
    cls = load_step_class(name)
    return cls.model_validate(dict(options))
