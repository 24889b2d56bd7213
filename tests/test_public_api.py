"""The exported names are the documented public API, and every built-in step is documented."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import ModuleType

import electric_proxy
from electric_proxy.registry import available_steps, load_step_class

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_all_is_sorted_and_complete() -> None:
    exported = electric_proxy.__all__
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), n))
    # The names are imported on first use: each must resolve, to the object its module
    # defines, and be listed by dir(); once all are resolved nothing else is public.
    for name in exported:
        value = getattr(electric_proxy, name)
        module = electric_proxy._EXPORTS[name]
        assert value is getattr(sys.modules[f"electric_proxy.{module}"], name), name
    assert set(exported) <= set(dir(electric_proxy))
    public = {
        name
        for name, value in vars(electric_proxy).items()
        if not name.startswith(("_", "@")) and not isinstance(value, ModuleType)
    }
    assert set(exported) == public


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        electric_proxy.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "'electric_proxy' has no attribute 'NoSuchThing'" in str(exc)
    else:
        raise AssertionError("electric_proxy.NoSuchThing resolved")


def test_star_import_gives_every_exported_name() -> None:
    namespace: dict[str, object] = {}
    exec("from electric_proxy import *", namespace)
    assert set(electric_proxy.__all__) <= set(namespace)


def test_every_export_is_documented_in_the_readme() -> None:
    missing = [n for n in electric_proxy.__all__ if not re.search(rf"\b{re.escape(n)}\b", README)]
    assert missing == []


BUILTIN_STEPS = {
    "bearer",
    "cors",
    "credentials",
    "gatekeeper",
    "headers",
    "jwt",
    "policy",
    "request_id",
    "stream_policy",
}


def test_every_builtin_step_is_registered_documented_and_tested() -> None:
    tests = Path(__file__).parent
    checked = set()
    for info in available_steps():
        if info.distribution != "electric-proxy":
            continue
        cls = load_step_class(info.name)
        assert f'use = "{info.name}"' in README, f"README has no config example for {info.name}"
        # A step's module, or the package of a step split into modules (steps/gatekeeper/).
        module = cls.__module__.removeprefix("electric_proxy.steps.").split(".")[0]
        assert (tests / "steps" / f"test_{module}.py").exists(), f"no tests for {info.name}"
        checked.add(info.name)
    # An empty registry (a broken install) must not pass this test by checking nothing.
    assert checked == BUILTIN_STEPS
