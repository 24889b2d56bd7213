"""Error responses: JSON, the right status, and headers that tell clients what to do next."""

from __future__ import annotations

import importlib
import json
import pkgutil

import pytest

import electric_proxy
from electric_proxy import ElectricProxyError, TooManyRequests, Unauthorized


@pytest.mark.parametrize(("retry_after", "header"), [(0.2, "1"), (1.0, "1"), (2.1, "3")])
def test_too_many_requests_says_when_to_come_back(retry_after: float, header: str) -> None:
    response = TooManyRequests("slow down", retry_after=retry_after).to_response()
    assert response.status == 429
    assert response.headers["Retry-After"] == header
    assert response.headers["Cache-Control"] == "no-store"
    assert response.text is not None
    assert json.loads(response.text) == {
        "error": "rate_limited",
        "message": "slow down",
        "retry_after": int(header),
    }


def test_unauthorized_carries_a_bearer_challenge_with_its_code() -> None:
    response = Unauthorized("expired", code="expired_token").to_response()
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="electric", error="expired_token"'


def test_every_error_the_package_defines_has_the_one_root() -> None:
    outside = []
    for info in pkgutil.walk_packages(electric_proxy.__path__, "electric_proxy."):
        # The kit and the Electric stand-in are not the proxy: their errors are Electric's
        # (the stand-in's) and pytest's, and never reach a proxy user.
        if info.name.startswith(("electric_proxy.testing", "electric_proxy.standin")):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
                and not issubclass(value, ElectricProxyError)
            ):
                outside.append(f"{info.name}.{value.__qualname__}")
    assert outside == []
