"""Stream access patterns, checked without HTTP."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from electric_proxy import Principal, StreamPolicy, StreamRule

ALICE = Principal("alice", {"sub": "alice", "org": {"id": "acme"}, "n": 7, "slash": "a/b"})


def policy(*paths: str) -> StreamPolicy:
    return StreamPolicy(rules=[StreamRule(paths=paths, allow=["read"])])


@pytest.mark.parametrize(
    ("pattern", "path", "allowed"),
    [
        ("chats/{sub}/**", "chats/alice", True),
        ("chats/{sub}/**", "chats/alice/a/b/c", True),
        ("chats/{sub}/**", "chats/bob/a", False),
        ("chats/{sub}/*", "chats/alice/a/b", False),
        ("orgs/{org.id}/feed", "orgs/acme/feed", True),
        ("n/{n}", "n/7", True),
        ("x/{slash}", "x/a/b", False),
        ("x/{missing}", "x/", False),
        ("**", "chats/alice/__ds/jwks.json", False),
        ("chats/{sub}/__ds/**", "chats/alice/__ds/jwks.json", True),
        ("a/**/z", "a/z", True),
        ("a/**/z", "a/b/c/z", True),
    ],
)
def test_patterns(pattern: str, path: str, allowed: bool) -> None:
    segments = tuple(path.split("/"))
    assert policy(pattern).allows("read", segments, ALICE) is allowed


def test_default_deny_and_actions() -> None:
    rules = StreamPolicy(rules=[StreamRule(paths=["**"], allow=["read"])])
    assert rules.allows("read", ("a",), None)
    assert not rules.allows("append", ("a",), None)
    assert not policy("users/{sub}").allows("read", ("users", "alice"), None)


@pytest.mark.parametrize("bad", ["a//b", "a/../b", "a/x{sub}", "./a", "a/{}"])
def test_malformed_patterns_fail_at_start(bad: str) -> None:
    with pytest.raises(ValidationError):
        policy(bad)
