"""The trusted server filter: ``:claim`` placeholders become positional parameters."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._errors import _capture, _Rejected, _unwrap
from ._text import _WHERE_PREFIX, _check_text, _parse_expression, _tokens
from ._tree import _param_numbers, _round_trip

_CLAIM_SEGMENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: The name-like text a placeholder runs into, quoted back in the refusal.
_RUN_ON: Final = re.compile(r"[\w.$-]+")


@dataclass(frozen=True)
class ServerFilter:
    """A policy's row filter, compiled once at start-up from trusted configuration.

    ``sql`` is the normalised filter with ``$1..$s``; ``claims`` names the claim that feeds
    each ``$k`` (``claims[k-1]``), so per-request work is only looking values up. Build it
    with :meth:`compile`; hand-made instances are re-checked by :func:`combine` anyway.
    """

    sql: str
    claims: tuple[str, ...]

    @classmethod
    def compile(cls, text: str, *, field: str = "server_where") -> ServerFilter:
        """Turn ``org_id = :org_id AND ...`` into ``org_id = $1 AND ...`` plus claim names.

        Placeholders are found in Postgres's token stream, not by regex, so ``':org_id'``
        inside a string and ``::type`` casts are left alone. Inside ``[...]`` a colon is
        always the array-slice separator. ``$n`` is refused so that parameter numbering is
        owned by this package alone. The server filter is trusted: it is not held to the
        client allow-list (it may, for instance, use a membership subquery), but it must
        still be one expression.
        """
        return _unwrap(_capture(cls._compile, text), field)

    @classmethod
    def _compile(cls, text: str) -> ServerFilter:
        text = _check_text(text, None)
        offset = len(_WHERE_PREFIX)
        tokens = _tokens(_WHERE_PREFIX + text, offset, text)
        if not tokens:
            raise _Rejected("is empty", len(text))
        claims: list[str] = []
        pieces: list[str] = []
        spans: list[_Substitution] = []
        written = 0
        cursor = 0
        bracket_depth = 0
        index = 0
        while index < len(tokens):
            token = tokens[index]
            index += 1
            if token.name == "PARAM":
                raise _Rejected(
                    "positional parameters ($n) are not allowed in a server filter; "
                    "use :claim_name placeholders",
                    token.start - offset,
                )
            if token.name == "ASCII_91":
                bracket_depth += 1
            elif token.name == "ASCII_93":
                bracket_depth -= 1
            if token.name != "ASCII_58" or bracket_depth > 0:
                continue
            name, index = _claim_name(tokens, index, token.end, text, offset)
            start = token.start - offset
            if name is None:
                glued = text[start + 1 : start + 2]
                if glued.isalpha() or glued in ("_", "$"):
                    raise _Rejected(f"{_CLAIM_RULE}, e.g. :org_id", start)
                raise _Rejected(
                    "':' must be followed directly by a claim name, e.g. :org_id", start
                )
            end = tokens[index - 1].end + 1 - offset
            _refuse_glued(name, text, end)
            if name not in claims:
                claims.append(name)
            replacement = f" ${claims.index(name) + 1} "
            before = text[cursor:start]
            pieces += [before, replacement]
            written += len(before)
            spans.append(_Substitution(written, written + len(replacement), start, end))
            written += len(replacement)
            cursor = end
        pieces.append(text[cursor:])
        substituted = "".join(pieces)
        try:
            node = _parse_expression(substituted)
        except _Rejected as exc:
            raise _Rejected(exc.reason, _original_position(exc.position, spans)) from None
        if _param_numbers(node) != set(range(1, len(claims) + 1)):
            raise _Rejected("placeholders could not be resolved unambiguously")
        return cls(sql=_round_trip(node), claims=tuple(claims))


#: What a placeholder's claim name may be, as the refusals say it.
_CLAIM_RULE: Final = (
    "a placeholder's claim name holds only ASCII letters, digits and '_', with '.' between "
    "the parts of a nested claim (:org.id)"
)


def _refuse_glued(name: str, text: str, end: int) -> None:
    """Refuse a placeholder run into more name-like text: ``:org-id`` reads as ``:org - id``.

    Postgres would parse it (a claim minus a column) and the mistake would only show at run
    time, as a missing claim and a 403 for everyone; here it is a config error. Subtraction
    is still possible with a space: ``:version - 1``.
    """
    glued = text[end : end + 1]
    if not (glued in ("-", ".", "_", "$") or glued.isalnum()):
        return
    run = _RUN_ON.match(text, end)
    written = f":{name}{run.group() if run else glued}"
    fix = (
        f"write it as {written.replace('-', '_')!r}, or put a space before '-' to subtract"
        if glued == "-"
        else "end the claim name with a space or an operator"
    )
    raise _Rejected(
        f"{written!r} is not one placeholder ({_CLAIM_RULE}): it reads as ':{name}' then "
        f"{written[len(name) + 1 :]!r}; {fix}",
        end,
    )


@dataclass(frozen=True)
class _Substitution:
    """Where one placeholder was replaced, to report errors against the configured text."""

    new_start: int
    new_end: int
    old_start: int
    old_end: int


def _claim_name(
    tokens: Sequence[Any], index: int, colon_end: int, text: str, offset: int
) -> tuple[str | None, int]:
    """Read ``name`` or ``name.sub.sub`` glued to a colon; keywords count as names here.

    Returns the name (None if there is none) and the index of the first token after it.
    """
    parts: list[str] = []
    after_name = index
    want_name = True
    previous_end = colon_end
    while index < len(tokens) and tokens[index].start == previous_end + 1:
        token = tokens[index]
        if want_name:
            word = text[token.start - offset : token.end + 1 - offset]
            if not _CLAIM_SEGMENT.fullmatch(word):
                break
            parts.append(word)
            after_name = index + 1
        elif token.name != "ASCII_46":
            break
        want_name = not want_name
        previous_end = token.end
        index += 1
    return (".".join(parts) if parts else None), after_name


def _original_position(position: int | None, spans: Sequence[_Substitution]) -> int | None:
    """Map an offset in the placeholder-substituted text back to the configured text."""
    if position is None:
        return None
    delta = 0
    for span in spans:
        if position < span.new_start:
            break
        if position < span.new_end:
            return span.old_start
        delta = span.old_end - span.new_end
    return position + delta
