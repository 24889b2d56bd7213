"""The installed plugin as a config sees it: discovery, options, errors, and no SDK at all.

``pip install -e plugins/electric-proxy-otel`` registers the entry point; without it these
tests fail on purpose (skipping would hide that the plugin path is no longer tested).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from electric_proxy_otel import OpenTelemetry
from otel_kit import shape_chain

from electric_proxy import ConfigError, available_steps, parse_config
from electric_proxy.testing import ALICE, RunningUpstream, auth

UPSTREAM = {"url": "http://electric:3000/v1/shape"}


def test_the_step_is_discoverable() -> None:
    [info] = [i for i in available_steps() if i.name == "opentelemetry"]
    assert info.distribution == "electric-proxy-otel"
    assert info.target == "electric_proxy_otel:OpenTelemetry"


def test_a_config_builds_it_with_its_options() -> None:
    options = {"trust_incoming_context": True, "record_principal": True, "tracer_name": "edge"}
    config = parse_config({"upstream": UPSTREAM, "chain": [{"use": "opentelemetry", **options}]})
    [(name, step)] = config.steps
    assert name == "opentelemetry" and isinstance(step, OpenTelemetry)
    assert (step.trust_incoming_context, step.record_principal) == (True, True)
    assert step.tracer_name == "edge"
    assert step.tracer_provider is None
    assert config.describe()["chain"] == [{"use": "opentelemetry", **options}]
    assert config.build().forwarder.trace_configs == list(step.upstream_trace_configs())


def test_the_defaults_trust_nobody_and_record_no_user() -> None:
    config = parse_config({"upstream": UPSTREAM, "chain": [{"use": "opentelemetry"}]})
    [(_, step)] = config.steps
    assert isinstance(step, OpenTelemetry)
    assert step.trust_incoming_context is False
    assert step.record_principal is False


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (
            {"trust_incoming_context": "sometimes"},
            "chain[0] (opentelemetry).trust_incoming_context: expected true or false",
        ),
        (
            {"tracer_name": ""},
            "chain[0] (opentelemetry).tracer_name: expected at least 1 character",
        ),
        ({"sample": 0.5}, "chain[0] (opentelemetry).sample: unknown option 'sample'"),
        # A provider is an object: code can hand one over, a file cannot.
        ({"tracer_provider": "sdk"}, "chain[0] (opentelemetry).tracer_provider: Input should"),
    ],
)
def test_bad_options_name_their_path(option: dict[str, Any], expected: str) -> None:
    raw = {"upstream": UPSTREAM, "chain": [{"use": "opentelemetry", **option}]}
    with pytest.raises(ConfigError) as info:
        parse_config(json.loads(json.dumps(raw)))
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


async def test_without_an_sdk_the_step_is_inert(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    """The global provider is the API's no-op until an application installs an SDK: requests
    pass unchanged, and a client's traceparent still does not reach Electric."""
    client = await proxy_client([OpenTelemetry(), *shape_chain(electric_upstream)])
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {**auth(ALICE), "traceparent": incoming}
    resp = await client.get("/v1/shape?table=todos&offset=-1", headers=headers)
    assert resp.status == 200
    received = electric_upstream.electric.requests[-1].headers
    assert "4bf92f3577b34da6a3ce929d0e0e4736" not in received.get("traceparent", "")
