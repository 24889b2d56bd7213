"""A step's options read from its model: names as TOML spells them, types, defaults, secrets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from electric_proxy import ShapePolicy
from electric_proxy.step_options import OptionInfo, step_options, type_name


class Key(BaseModel):
    id: str
    value: SecretStr = Field(description="The shared secret")


class Example(BaseModel):
    """Not a step: any pydantic model is read the same way."""

    mode: Literal["on", "off"] = Field("on", description="Whether it is on")
    keys: tuple[Key, ...] = ()
    by_name: dict[str, Key] = Field(default_factory=dict)
    passwords: dict[str, SecretStr]
    hook: Callable[[str], Awaitable[None]] | None = None
    ttl: float = Field(1.5, description="Seconds\n    it lasts")


def test_options_name_type_default_secret_and_description() -> None:
    assert step_options(Example) == [
        OptionInfo("mode", '"on" | "off"', '"on"', False, "Whether it is on"),
        OptionInfo("keys", "list[Key]", "[]", False, ""),
        OptionInfo("keys[].id", "str", "(required)", False, ""),
        OptionInfo("keys[].value", "SecretStr", "(required)", True, "The shared secret"),
        OptionInfo("by_name", "dict[str, Key]", "{}", False, ""),
        OptionInfo("by_name.<name>.id", "str", "(required)", False, ""),
        OptionInfo("by_name.<name>.value", "SecretStr", "(required)", True, "The shared secret"),
        OptionInfo("passwords", "dict[str, SecretStr]", "(required)", True, ""),
        OptionInfo("hook", "callable (code only) | None", "(none)", False, ""),
        OptionInfo("ttl", "float", "1.5", False, "Seconds it lasts"),
    ]


def test_type_names_read_as_toml_values() -> None:
    assert type_name(tuple[str, ...] | None) == "list[str] | None"
    assert type_name(frozenset[int]) == "list[int]"
    assert type_name(dict[str, str | list[str]]) == "dict[str, str | list[str]]"


def test_a_builtin_step_lists_its_nested_options() -> None:
    options = {option.name: option for option in step_options(ShapePolicy)}
    assert options["shapes"].default == "(required)"
    assert options["shapes.<name>.where"].type == "str | None"
    assert options["shapes.<name>.replica"].default == '"default"'
    assert options["limits"].default == "(see below)"  # a dataclass, read like a model
    assert (options["limits.max_depth"].type, options["limits.max_depth"].default) == ("int", "32")
    assert not any(option.secret for option in options.values())
