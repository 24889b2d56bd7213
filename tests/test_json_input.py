"""Client JSON is bounded: too deep, too large or not JSON is a 400, never a 500."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from electric_proxy.json_input import MAX_DEPTH, JsonInputError, load_client_json
from electric_proxy.testing import ALICE, RunningUpstream, auth


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_depth_up_to_the_bound_is_read_and_beyond_it_refused() -> None:
    assert load_client_json(nested(MAX_DEPTH)) is not None
    with pytest.raises(JsonInputError, match="nested deeper"):
        load_client_json(nested(MAX_DEPTH + 1))
    with pytest.raises(JsonInputError, match="nested deeper"):
        load_client_json(nested(100_000))


def test_brackets_inside_strings_are_not_structure() -> None:
    text = json.dumps({"where": "[" * 100, "quote": '\\"{{{{'})
    assert load_client_json(text) == json.loads(text)


@pytest.mark.parametrize(
    "raw",
    [b"NaN", b"[Infinity]", b"\xff\xfe", b"", b'{"a": 1', b'"' + b'\\"' * 50_000, b"1" * 5000],
)
def test_what_is_not_json_is_refused_with_a_safe_message(raw: bytes) -> None:
    with pytest.raises(JsonInputError) as caught:
        load_client_json(raw)
    assert str(caught.value) in {"not valid JSON", "NaN and Infinity are not JSON"}


def test_size_is_bounded_before_parsing() -> None:
    with pytest.raises(JsonInputError, match="larger than 10 bytes"):
        load_client_json(b'{"a": "bcdefgh"}', max_size=10)


def test_an_unterminated_string_costs_linear_time() -> None:
    """Retrying the string pattern from every later quote would take minutes here."""
    started = time.process_time()
    with pytest.raises(JsonInputError):
        load_client_json(b'["' + b'\\"' * 400_000)
    assert time.process_time() - started < 5


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000])
async def test_a_deep_subset_body_is_invalid_body(
    shape_client: Any, electric_upstream: RunningUpstream, depth: int
) -> None:
    body = '{"where": "title = $1", "params": ' + nested(depth) + "}"
    resp = await shape_client.post(
        "/v1/shape?offset=-1",
        data=body,
        headers={**auth(ALICE), "Content-Type": "application/json"},
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_body"
    assert electric_upstream.electric.requests == []


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1300])  # 1300: the deepest an 8 KB line holds
async def test_deep_subset_params_in_the_query_are_invalid_filter(
    shape_client: Any, electric_upstream: RunningUpstream, depth: int
) -> None:
    query = {"offset": "-1", "subset__where": "title = $1", "subset__params": nested(depth)}
    resp = await shape_client.get("/v1/shape", params=query, headers=auth(ALICE))
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_filter"
    assert electric_upstream.electric.requests == []
