"""The kit's fixtures: the proxies they build agree with the stand-ins on the secret."""

from __future__ import annotations

from typing import Any

from electric_proxy import Credentials, ShapePolicy, StreamPolicy, StreamRule
from electric_proxy.testing import (
    ALICE,
    STREAMS_SECRET,
    RunningStreams,
    RunningUpstream,
    auth,
    shape_messages,
    two_users,
)

TODOS = ShapePolicy(shapes={"todos": {"where": "org_id = :org_id"}})


async def test_a_chain_without_credentials_gets_the_stand_ins_secret(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    client = await proxy_client([two_users(), TODOS])
    resp = await client.get("/v1/shape", params={"offset": "-1"}, headers=auth(ALICE))
    assert resp.status == 200
    assert {row["org_id"] for row in shape_messages(await resp.json()).rows} == {"acme"}
    assert electric_upstream.electric.requests[-1].query["secret"] == electric_upstream.secret


async def test_a_chain_with_its_own_credentials_is_used_as_given(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    client = await proxy_client([two_users(), TODOS, Credentials(secret="not-the-secret")])
    resp = await client.get("/v1/shape", params={"offset": "-1"}, headers=auth(ALICE))
    assert resp.status != 200
    assert electric_upstream.electric.requests[-1].query.getall("secret") == ["not-the-secret"]


async def test_inject_secret_false_leaves_the_chain_alone(
    proxy_client: Any, electric_upstream: RunningUpstream
) -> None:
    client = await proxy_client([two_users(), TODOS], inject_secret=False)
    resp = await client.get("/v1/shape", params={"offset": "-1"}, headers=auth(ALICE))
    assert resp.status != 200
    assert "secret" not in electric_upstream.electric.requests[-1].query


async def test_config_client_serves_a_proxy_toml_mapping(
    config_client: Any, electric_upstream: RunningUpstream
) -> None:
    client = await config_client(
        {
            "chain": [
                {
                    "use": "bearer",
                    "tokens": [{"token": ALICE, "sub": "alice", "claims": {"org_id": "acme"}}],
                },
                {"use": "policy", "shapes": {"todos": {"where": "org_id = :org_id"}}},
            ]
        }
    )
    resp = await client.get("/v1/shape", params={"offset": "-1"}, headers=auth(ALICE))
    assert resp.status == 200
    assert {row["org_id"] for row in shape_messages(await resp.text()).rows} == {"acme"}
    assert (await client.get("/v1/shape", params={"offset": "-1"})).status == 401
    assert (await client.get("/healthz")).status == 200


async def test_stream_client_serves_the_streams_route_with_the_secret_injected(
    stream_client: Any, streams_upstream: RunningStreams
) -> None:
    policy = StreamPolicy(rules=[StreamRule(paths=["chats/{sub}/**"], allow=["create", "read"])])
    client = await stream_client([two_users(), policy])
    put = await client.put("/v1/stream/chats/alice/room", headers=auth(ALICE))
    assert put.status == 201
    read = await client.get("/v1/stream/chats/alice/room", headers=auth(ALICE))
    assert read.status == 200
    assert streams_upstream.streams.seen[-1].headers["Authorization"] == f"Bearer {STREAMS_SECRET}"
    refused = await client.put("/v1/stream/chats/bob/room", headers=auth(ALICE))
    assert refused.status == 403
