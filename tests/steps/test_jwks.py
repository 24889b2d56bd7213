"""Keys from a JWKS URL: rotation, outages, floods of made-up ``kid``s, one fetch at a time.

The identity provider is an aiohttp server the test controls: it can rotate its keys,
answer slowly, answer garbage, or go away.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from joserfc.jwk import Key, RSAKey
from test_jwt import EC, RSA, RSA_OTHER, bearer, chain, claims, refused, sign

from electric_proxy import ServiceUnavailable, ShapeProxy
from electric_proxy.steps.jwks import MAX_KEYS, JwksCache, JwksError, parse_jwks
from electric_proxy.steps.jwt import JwtAuth
from electric_proxy.testing import RunningUpstream, eventually

NEW = RSAKey.generate_key(2048, auto_kid=True)


class IdentityProvider:
    """A JWKS endpoint whose keys, status, body and speed the test sets."""

    def __init__(self, keys: list[Key]) -> None:
        self.keys = keys
        self.status = 200
        self.body: bytes | None = None
        self.delay = 0.0
        self.hits = 0
        self.server: Any = None

    @property
    def url(self) -> str:
        return str(self.server.make_url("/jwks"))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/jwks", self.serve)
        app.router.add_get("/moved", self.moved)
        return app

    async def serve(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.body is not None:
            return web.Response(body=self.body, status=self.status, content_type="application/json")
        document = {"keys": [k.as_dict(private=False) for k in self.keys]}
        return web.json_response(document, status=self.status)

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/jwks")

    async def go_away(self) -> None:
        await self.server.close()


@pytest.fixture
async def idp(aiohttp_server: Any) -> IdentityProvider:
    provider = IdentityProvider([RSA])
    provider.server = await aiohttp_server(provider.app(), access_log=None)
    return provider


def jwt_auth(idp: IdentityProvider, **options: Any) -> JwtAuth:
    return JwtAuth(algorithms=["RS256", "ES256"], jwks_url=idp.url, **options)


async def test_keys_come_from_the_jwks_url_and_are_cached(
    proxy_client: Any, electric_upstream: RunningUpstream, idp: IdentityProvider
) -> None:
    auth = jwt_auth(idp)
    client = await proxy_client(chain(electric_upstream, auth))
    token = sign(claims(), RSA, "RS256", kid=RSA.kid)
    for _ in range(3):
        assert (await client.get("/v1/shape?offset=-1", headers=bearer(token))).status == 200
    assert idp.hits == 1
    assert auth.jwks is not None and auth.jwks.fetches == 1


async def test_a_new_kid_after_rotation_is_picked_up(
    proxy_client: Any,
    electric_upstream: RunningUpstream,
    idp: IdentityProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Rotation on real sockets; the rate limit itself is timed exactly by a fake clock below."""
    auth = jwt_auth(idp, jwks_min_refresh_interval=0)
    client = await proxy_client(chain(electric_upstream, auth))
    old = sign(claims(), RSA, "RS256", kid=RSA.kid)
    assert (await client.get("/v1/shape?offset=-1", headers=bearer(old))).status == 200

    idp.keys = [NEW]
    new = sign(claims(), NEW, "RS256", kid=NEW.kid)
    assert (await client.get("/v1/shape?offset=-1", headers=bearer(new))).status == 200
    assert idp.hits == 2

    # The rotated-out key left the cache with that refresh.
    electric_upstream.electric.requests.clear()
    await refused(client, electric_upstream, old, caplog)
    assert auth.jwks is not None and [k.kid for k in auth.jwks.keys] == [NEW.kid]


async def test_idp_unreachable_with_no_cached_key_is_503(
    proxy_client: Any,
    electric_upstream: RunningUpstream,
    idp: IdentityProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth = jwt_auth(idp, jwks_retry_interval=30)
    client = await proxy_client(chain(electric_upstream, auth))
    await idp.go_away()
    token = sign(claims(), RSA, "RS256", kid=RSA.kid)
    await refused(client, electric_upstream, token, caplog, status=503, code="service_unavailable")
    resp = await client.get("/v1/shape?offset=-1", headers=bearer(token))
    assert resp.status == 503
    assert int(resp.headers["Retry-After"]) >= 1
    assert auth.jwks is not None
    assert auth.jwks.unavailable == 2
    assert auth.jwks.failures == 1  # the second request fell within the retry interval
    assert "JWKS fetch" in caplog.text and "failed" in caplog.text


async def test_idp_errors_then_recovers(
    proxy_client: Any, electric_upstream: RunningUpstream, idp: IdentityProvider
) -> None:
    auth = jwt_auth(idp, jwks_retry_interval=0.1)
    client = await proxy_client(chain(electric_upstream, auth))
    token = sign(claims(), RSA, "RS256", kid=RSA.kid)
    idp.status = 500
    assert (await client.get("/v1/shape?offset=-1", headers=bearer(token))).status == 503
    idp.status = 200
    await asyncio.sleep(0.15)
    assert (await client.get("/v1/shape?offset=-1", headers=bearer(token))).status == 200
    assert auth.jwks is not None and auth.jwks.fetches == 2 and auth.jwks.failures == 1


async def test_idp_unreachable_with_cached_keys_keeps_working(
    proxy_client: Any,
    electric_upstream: RunningUpstream,
    idp: IdentityProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth = jwt_auth(idp, jwks_refresh_interval=0.05, jwks_min_refresh_interval=0.05)
    client = await proxy_client(chain(electric_upstream, auth))
    token = sign(claims(), RSA, "RS256", kid=RSA.kid)
    assert (await client.get("/v1/shape?offset=-1", headers=bearer(token))).status == 200

    await idp.go_away()
    cache = auth.jwks
    assert cache is not None
    for _ in range(3):
        await asyncio.sleep(0.06)
        resp = await client.get("/v1/shape?offset=-1", headers=bearer(token))
        assert resp.status == 200  # stale keys serve while the refresh fails
    await eventually(lambda: cache.failures >= 1)
    assert [k.kid for k in cache.keys] == [RSA.kid]
    assert cache.unavailable == 0

    # An unknown kid is still a 401, not a 503: the provider's keys are known, just not this one.
    electric_upstream.electric.requests.clear()
    stranger = sign(claims(), RSA_OTHER, "RS256", kid=RSA_OTHER.kid)
    await refused(client, electric_upstream, stranger, caplog)


async def test_expired_keys_are_refreshed_in_the_background(
    proxy_client: Any, electric_upstream: RunningUpstream, idp: IdentityProvider
) -> None:
    auth = jwt_auth(idp, jwks_refresh_interval=0.05, jwks_min_refresh_interval=30)
    client = await proxy_client(chain(electric_upstream, auth))
    old = sign(claims(), RSA, "RS256", kid=RSA.kid)
    assert (await client.get("/v1/shape?offset=-1", headers=bearer(old))).status == 200
    idp.keys = [RSA, NEW]
    await asyncio.sleep(0.06)
    assert (await client.get("/v1/shape?offset=-1", headers=bearer(old))).status == 200
    await eventually(lambda: idp.hits == 2 and auth.jwks is not None and len(auth.jwks.keys) == 2)
    new = sign(claims(), NEW, "RS256", kid=NEW.kid)
    assert (await client.get("/v1/shape?offset=-1", headers=bearer(new))).status == 200


@pytest.mark.parametrize("warm", [False, True])
async def test_a_flood_of_random_kids_cannot_hammer_the_idp(
    proxy_client: Any,
    electric_upstream: RunningUpstream,
    idp: IdentityProvider,
    caplog: pytest.LogCaptureFixture,
    warm: bool,
) -> None:
    auth = jwt_auth(idp)
    client = await proxy_client(chain(electric_upstream, auth))
    if warm:
        token = sign(claims(), RSA, "RS256", kid=RSA.kid)
        assert (await client.get("/v1/shape?offset=-1", headers=bearer(token))).status == 200
        electric_upstream.electric.requests.clear()

    tokens = [sign(claims(), RSA_OTHER, "RS256", kid=secrets.token_urlsafe(8)) for _ in range(200)]
    responses = await asyncio.gather(
        *(client.get("/v1/shape?offset=-1", headers=bearer(t)) for t in tokens)
    )
    assert {r.status for r in responses} == {401}
    for resp in responses:
        assert (await resp.json())["error"] == "invalid_token"
    assert idp.hits <= 2
    assert auth.jwks is not None and auth.jwks.fetches <= 2
    assert electric_upstream.electric.requests == []
    await refused(client, electric_upstream, tokens[0], caplog)


async def test_concurrent_requests_share_one_fetch(
    proxy_client: Any, electric_upstream: RunningUpstream, idp: IdentityProvider
) -> None:
    idp.delay = 0.3
    auth = jwt_auth(idp)
    client = await proxy_client(chain(electric_upstream, auth))
    token = sign(claims(), EC, "ES256", kid=EC.kid)
    idp.keys = [RSA, EC]
    responses = await asyncio.gather(
        *(client.get("/v1/shape?offset=-1", headers=bearer(token)) for _ in range(50))
    )
    assert {r.status for r in responses} == {200}
    assert idp.hits == 1


async def test_a_client_going_away_does_not_cancel_the_shared_fetch(
    proxy_client: Any, electric_upstream: RunningUpstream, idp: IdentityProvider
) -> None:
    idp.delay = 0.3
    auth = jwt_auth(idp)
    client = await proxy_client(chain(electric_upstream, auth))
    token = sign(claims(), RSA, "RS256", kid=RSA.kid)
    impatient = asyncio.ensure_future(client.get("/v1/shape?offset=-1", headers=bearer(token)))
    await eventually(lambda: idp.hits == 1)
    impatient.cancel()
    await asyncio.wait([impatient])
    assert (await client.get("/v1/shape?offset=-1", headers=bearer(token))).status == 200
    assert idp.hits == 1


async def test_a_slow_idp_times_out_into_503(
    proxy_client: Any, electric_upstream: RunningUpstream, idp: IdentityProvider
) -> None:
    idp.delay = 2.0
    auth = jwt_auth(idp, jwks_timeout=0.2)
    client = await proxy_client(chain(electric_upstream, auth))
    token = sign(claims(), RSA, "RS256", kid=RSA.kid)
    resp = await client.get("/v1/shape?offset=-1", headers=bearer(token))
    assert resp.status == 503
    assert electric_upstream.electric.requests == []


async def test_kidless_tokens_are_tried_against_matching_keys(
    proxy_client: Any, electric_upstream: RunningUpstream, idp: IdentityProvider
) -> None:
    idp.keys = [RSA_OTHER, EC, RSA]
    client = await proxy_client(chain(electric_upstream, jwt_auth(idp)))
    token = sign(claims(), RSA, "RS256")
    assert (await client.get("/v1/shape?offset=-1", headers=bearer(token))).status == 200


# --- the cache on its own ---------------------------------------------------------------------


@pytest.fixture
async def cache(idp: IdentityProvider) -> Any:
    now = [1000.0]
    jwks = JwksCache(idp.url, min_refresh_interval=30, retry_interval=2, clock=lambda: now[0])
    await jwks.open()
    yield jwks, now
    await jwks.close()


async def test_unknown_kid_refreshes_are_rate_limited(cache: Any, idp: IdentityProvider) -> None:
    jwks, now = cache
    assert [k.kid for k in await jwks.keys_for(RSA.kid, "RS256")] == [RSA.kid]
    idp.keys = [RSA, NEW]
    now[0] += 29
    assert await jwks.keys_for(NEW.kid, "RS256") == []
    assert jwks.fetches == 1
    now[0] += 1
    assert [k.kid for k in await jwks.keys_for(NEW.kid, "RS256")] == [NEW.kid]
    assert jwks.fetches == 2
    assert jwks.stats() == {
        "url": idp.url,
        "keys": 2,
        "fetches": 2,
        "failures": 0,
        "unavailable": 0,
    }


async def test_expired_keys_serve_while_refreshes_are_paced(
    cache: Any, idp: IdentityProvider
) -> None:
    jwks, now = cache
    await jwks.keys_for(RSA.kid, "RS256")
    idp.status = 500
    now[0] += 300  # refresh_interval: the keys are stale
    for _ in range(5):
        assert [k.kid for k in await jwks.keys_for(RSA.kid, "RS256")] == [RSA.kid]
    await eventually(lambda: jwks.failures == 1)
    assert jwks.fetches == 2
    now[0] += 29
    await jwks.keys_for(RSA.kid, "RS256")
    assert jwks.fetches == 2  # a failed refresh is retried after min_refresh_interval, not per call
    now[0] += 1
    idp.status = 200
    idp.keys = [NEW]
    await jwks.keys_for(RSA.kid, "RS256")
    await eventually(lambda: [k.kid for k in jwks.keys] == [NEW.kid])
    assert jwks.fetches == 3


async def test_keys_are_matched_to_the_algorithm(cache: Any, idp: IdentityProvider) -> None:
    jwks, _ = cache
    idp.keys = [RSA, EC]
    assert [k.kid for k in await jwks.keys_for(None, "ES256")] == [EC.kid]
    assert await jwks.keys_for(RSA.kid, "ES256") == []
    assert await jwks.keys_for(RSA.kid, "HS256") == []
    assert await jwks.keys_for(RSA.kid, "none") == []


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda idp: setattr(idp, "status", 500), "HTTP status 500"),
        (lambda idp: setattr(idp, "body", b"<html>"), "not JSON"),
        (lambda idp: setattr(idp, "body", b"[]"), "no `keys` list"),
        (lambda idp: setattr(idp, "body", b'{"keys": []}'), "no usable signing key"),
        (
            lambda idp: setattr(idp, "body", b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'),
            "no usable signing key",
        ),
        (lambda idp: setattr(idp, "body", b'{"keys": [' + b" " * (2 << 20) + b"]}"), "larger"),
    ],
    ids=["status", "html", "not-a-set", "empty", "only-secrets", "too-large"],
)
async def test_a_failed_refresh_keeps_the_good_keys(
    cache: Any,
    idp: IdentityProvider,
    caplog: pytest.LogCaptureFixture,
    setup: Callable[[IdentityProvider], None],
    reason: str,
) -> None:
    jwks, now = cache
    await jwks.keys_for(RSA.kid, "RS256")
    setup(idp)
    now[0] += 31
    assert await jwks.keys_for(NEW.kid, "RS256") == []
    assert jwks.failures == 1
    assert [k.kid for k in jwks.keys] == [RSA.kid]
    assert [k.kid for k in await jwks.keys_for(RSA.kid, "RS256")] == [RSA.kid]
    assert reason in caplog.text
    assert "keeping 1 cached keys" in caplog.text


async def test_redirects_are_not_followed(idp: IdentityProvider) -> None:
    jwks = JwksCache(str(idp.server.make_url("/moved")))
    await jwks.open()
    try:
        with pytest.raises(ServiceUnavailable):
            await jwks.keys_for(RSA.kid, "RS256")
    finally:
        await jwks.close()
    assert idp.hits == 0


async def test_an_unopened_cache_says_how_to_open_it(
    idp: IdentityProvider, caplog: pytest.LogCaptureFixture
) -> None:
    jwks = JwksCache(idp.url)
    with pytest.raises(ServiceUnavailable):
        await jwks.keys_for(RSA.kid, "RS256")
    assert "cleanup_ctx" in caplog.text
    assert idp.hits == 0


async def test_close_ends_the_session_and_any_refresh(idp: IdentityProvider) -> None:
    idp.delay = 5.0
    jwks = JwksCache(idp.url)
    await jwks.open()
    await jwks.open()  # a second app sharing the step
    fetch = asyncio.ensure_future(jwks.keys_for(RSA.kid, "RS256"))
    await eventually(lambda: idp.hits == 1)
    await jwks.close()
    assert not fetch.done()
    await jwks.close()
    with pytest.raises(ServiceUnavailable):
        await fetch


async def test_the_step_opens_and_closes_its_session(
    aiohttp_client: Any, electric_upstream: RunningUpstream, idp: IdentityProvider
) -> None:
    auth = jwt_auth(idp)
    proxy = ShapeProxy(upstream=electric_upstream.url, chain=chain(electric_upstream, auth))
    client = await aiohttp_client(proxy.app())
    token = sign(claims(), RSA, "RS256", kid=RSA.kid)
    assert (await client.get("/v1/shape?offset=-1", headers=bearer(token))).status == 200
    cache = auth.jwks
    assert cache is not None and cache._session is not None
    await client.close()
    assert cache._session is None
    assert cache.stats()["keys"] == 1  # the keys outlive the session, for the next start


# --- parsing ----------------------------------------------------------------------------------


def test_parse_keeps_only_public_signing_keys(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    document = {
        "keys": [
            RSA.as_dict(private=False),
            {**EC.as_dict(private=False), "use": "enc"},
            {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"},
            {"kty": "RSA", "n": "broken"},
            "not a key",
            {**NEW.as_dict(private=False), "use": "sig"},
        ]
    }
    keys = parse_jwks(json.dumps(document).encode())
    assert [k.kid for k in keys] == [RSA.kid, NEW.kid]
    assert "skipping a key" in caplog.text


def test_parse_bounds_the_number_of_keys() -> None:
    document = {"keys": [RSA.as_dict(private=False)] * (MAX_KEYS + 5)}
    assert len(parse_jwks(json.dumps(document).encode())) == MAX_KEYS


@pytest.mark.parametrize("raw", [b"", b"\xff", b"null", b'{"keys": {}}', b'{"keys": [1]}'])
def test_parse_refuses_what_is_not_a_key_set(raw: bytes) -> None:
    with pytest.raises(JwksError):
        parse_jwks(raw)
