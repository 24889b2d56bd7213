"""Postgres identifiers as text: quoting a name and reading a comma-separated list of them.

Electric reads ``columns`` the way Postgres reads names: unquoted ones fold to lower case,
quoted ones keep case, commas and doubled quotes. Writing and reading that form here, once,
keeps what a policy or a token decides and what Electric selects the same columns.
"""

from __future__ import annotations

__all__ = ["quote_ident", "split_identifiers"]


def quote_ident(name: str) -> str:
    """``name`` as Postgres must read it: bare when folding cannot change it, else quoted."""
    if name.isidentifier() and name == name.lower():
        return name
    return '"' + name.replace('"', '""') + '"'


def split_identifiers(text: str) -> tuple[str, ...] | None:
    """``id,"Due Date",title`` as Postgres names (``("id", "Due Date", "title")``).

    Unquoted names fold to lower case and quoted ones keep case, commas and doubled quotes,
    the way Electric reads ``columns``; the TypeScript client quotes every name it sends.
    ``None`` when the list is malformed.
    """
    names: list[str] = []
    i, end = 0, len(text)
    while True:
        if text.startswith('"', i):
            parts: list[str] = []
            j = i + 1
            while True:
                close = text.find('"', j)
                if close < 0:
                    return None
                parts.append(text[j:close])
                if text.startswith('""', close):
                    parts.append('"')
                    j = close + 2
                    continue
                i = close + 1
                break
            name = "".join(parts)
        else:
            comma = text.find(",", i)
            stop = end if comma < 0 else comma
            name = text[i:stop]
            if '"' in name:
                return None
            name = name.lower()
            i = stop
        if not name:
            return None
        names.append(name)
        if i == end:
            return tuple(names)
        if text[i] != ",":
            return None
        i += 1
