"""Config errors in a config author's words, from pydantic's.

pydantic speaks to programmers: "Extra inputs are not permitted", "Value should have at least
16 items after validation", "Value error, ...". A config author wants the option path, what
was expected and, for a typo, the option they meant. Nothing here quotes a value: any of
them may be a secret.
"""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .step_options import step_options

__all__ = ["did_you_mean", "validation_problems"]


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f", did you mean {close[0]!r}?" if close else ""


def _sibling_options(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The option names allowed next to the unknown key at ``loc``, read from the model as
    ``plugins --options`` lists them (``tokens[].token``, ``shapes.<name>.where``)."""
    names = [option.name for option in step_options(model)]
    prefix = ""
    for part in loc[:-1]:
        if isinstance(part, int):
            prefix += "[]"
            continue
        for candidate in (f"{prefix}.{part}" if prefix else str(part), f"{prefix}.<name>"):
            if any(
                n == candidate or n.startswith((f"{candidate}.", f"{candidate}[")) for n in names
            ):
                prefix = candidate
                break
        else:
            return []
    start = f"{prefix}." if prefix else ""
    return [
        n[len(start) :]
        for n in names
        if n.startswith(start) and not any(c in n[len(start) :] for c in ".[")
    ]


#: What a TOML author wrote instead of the type pydantic expected, in their words.
_TOML_TYPES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
}


def _message(err: ErrorDetails, model: type[BaseModel] | None) -> str:
    """pydantic's message in a config author's words; never the value (it may be secret)."""
    kind, ctx = err["type"], err.get("ctx", {})
    if kind == "value_error":
        return err["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        key = str(err["loc"][-1]) if err["loc"] else "?"
        siblings = _sibling_options(model, err["loc"]) if model is not None else []
        return f"unknown option {key!r}{did_you_mean(key, siblings)}"
    if kind == "missing":
        return "required option is missing"
    if kind in ("too_short", "too_long", "string_too_short", "string_too_long"):
        many = (
            "items"
            if ctx.get("field_type") in ("List", "Tuple", "Set", "Dictionary")
            else ("characters")
        )
        shortest = kind.endswith("short")
        limit = ctx["min_length"] if shortest else ctx["max_length"]
        unit = many[:-1] if limit == 1 else many
        return f"expected at {'least' if shortest else 'most'} {limit} {unit}"
    if kind in _EXPECTED:
        got = _TOML_TYPES.get(type(err.get("input")), "")
        # port = "8080": TOML quotes make a string; the value is meant without them.
        hint = " (write it without quotes)" if got == "a string" else ""
        return f"expected {_EXPECTED[kind]}{f', not {got}' if got else ''}{hint}"
    return err["msg"]


def validation_problems(
    prefix: str, exc: ValidationError, model: type[BaseModel] | None = None
) -> list[str]:
    problems = []
    # The input is read only for its type (a string where a number was meant), never shown.
    for err in exc.errors(include_url=False, include_input=True):
        # tokens[0].token, as TOML and the chain's own chain[0] spell a position.
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        problems.append(f"{prefix}{loc}: {_message(err, model)}")
    return problems
