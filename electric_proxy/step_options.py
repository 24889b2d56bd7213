"""A step's options as a config author needs them: read from the step's pydantic model.

``electric-proxy plugins --options NAME`` prints these, so a plugin documents its options
by declaring its fields (``Field(description=...)``, ``SecretStr`` for secrets) and nothing
else. Options of nested models (a token in ``tokens``, a shape in ``shapes``) are listed
under dotted names, ``tokens[].token`` or ``shapes.<name>.where``, as a TOML file spells
them.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

__all__ = ["OptionInfo", "step_options"]

_SEQUENCES = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Set)
_MAPPINGS = (dict, collections.abc.Mapping)
#: Nested models deeper than this are named but not expanded (no model nests that far).
_MAX_DEPTH = 4


@dataclass(frozen=True, slots=True)
class OptionInfo:
    """One option: its config key, a readable type, its default, and whether it is masked."""

    name: str
    type: str
    default: str
    secret: bool
    description: str


def type_name(annotation: Any) -> str:
    """``tuple[str, ...] | None`` as a TOML author reads it: ``list[str] | None``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is Annotated:
        return type_name(args[0])
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if origin is Literal:
        return " | ".join(json.dumps(arg) for arg in args)
    if origin is collections.abc.Callable:
        return "callable (code only)"
    if origin in _SEQUENCES:
        item = args[0] if args else Any
        return f"list[{type_name(item)}]"
    if origin in _MAPPINGS:
        key, value = args if len(args) == 2 else (Any, Any)
        return f"dict[{type_name(key)}, {type_name(value)}]"
    if annotation is Any:
        return "any"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(map(type_name, args))}]"
    return getattr(annotation, "__name__", str(annotation))


def _holds_secret(annotation: Any) -> bool:
    """Whether the value, or an item of it, is a ``SecretStr``/``SecretBytes`` (masked)."""
    if isinstance(annotation, type) and issubclass(annotation, SecretStr | SecretBytes):
        return True
    return any(_holds_secret(arg) for arg in get_args(annotation))


def _fields(annotation: Any) -> dict[str, FieldInfo] | None:
    """The fields of a pydantic model or a dataclass (``policy``'s ``limits``), else None."""
    if not isinstance(annotation, type):
        return None
    if issubclass(annotation, BaseModel):
        return dict(annotation.model_fields)
    if not dataclasses.is_dataclass(annotation):
        return None
    hints = get_type_hints(annotation, include_extras=True)
    found = {}
    for field in dataclasses.fields(annotation):
        if field.default is not dataclasses.MISSING:
            info = FieldInfo.from_annotated_attribute(hints[field.name], field.default)
        elif field.default_factory is not dataclasses.MISSING:
            info = FieldInfo(annotation=hints[field.name], default_factory=field.default_factory)
        else:
            info = FieldInfo.from_annotation(hints[field.name])
        found[field.name] = info
    return found


def _nested(annotation: Any) -> list[tuple[str, Any]]:
    """Models inside an option, each with how its fields are reached from the option."""
    if _fields(annotation) is not None:
        return [("", annotation)]
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in _SEQUENCES and args:
        return [("[]" + path, model) for path, model in _nested(args[0])]
    if origin in _MAPPINGS and len(args) == 2:
        return [(".<name>" + path, model) for path, model in _nested(args[1])]
    if origin in (Union, types.UnionType, Annotated):
        return [found for arg in args for found in _nested(arg)]
    return []


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "(required)"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "(none)"
    if _fields(type(value)) is not None:
        return "(see below)"
    return json.dumps(to_jsonable_python(value))


def _options(model: Any, prefix: str, depth: int) -> list[OptionInfo]:
    found = []
    for name, field in (_fields(model) or {}).items():
        key = prefix + (field.alias or name)
        found.append(
            OptionInfo(
                name=key,
                type=type_name(field.annotation),
                default=_default(field),
                secret=_holds_secret(field.annotation),
                description=" ".join((field.description or "").split()),
            )
        )
        if depth < _MAX_DEPTH:
            for path, nested in _nested(field.annotation):
                found += _options(nested, f"{key}{path}.", depth + 1)
    return found


def step_options(step: type[BaseModel]) -> list[OptionInfo]:
    """Every option of ``step`` (a :class:`~electric_proxy.Step` class, or any pydantic
    model), nested ones after the option holding them, in field order."""
    return _options(step, "", 0)
