"""Request IDs and client addresses, trusting forwarding headers only from known proxies.

A request ID joins the proxy's log lines to Electric's (Electric's ``Plug.RequestId`` adopts
an incoming ``x-request-id`` of 20 to 200 characters, so generated IDs are 32). An ID or a
``X-Forwarded-For``/``Forwarded`` chain from anyone else is ignored: a client could
otherwise forge its address for rate limits or inject text into logs.
"""

from __future__ import annotations

import re
import uuid
from functools import cached_property
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from aiohttp import hdrs, web
from pydantic import Field

from ..chain import Step
from ..keys import CLIENT_IP, REQUEST_ID, UPSTREAM
from ..logs import bind_request_id

__all__ = ["RequestId"]


_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

Network = IPv4Network | IPv6Network


def _parse_ip(text: str) -> IPv4Address | IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ip_address(text)
    except ValueError:
        return None


class RequestId(Step):
    """Accept or mint a request ID; work out the client's address."""

    header: str = Field("X-Request-ID", min_length=1)
    trusted_proxies: tuple[Network, ...] = Field(
        (), description="Networks whose X-Request-ID / X-Forwarded-For / Forwarded are believed"
    )

    @cached_property
    def _header_lower(self) -> str:
        return self.header.lower()

    def _trusted(self, address: IPv4Address | IPv6Address | None) -> bool:
        return address is not None and any(address in net for net in self.trusted_proxies)

    def _client_ip(self, request: web.Request, peer: IPv4Address | IPv6Address | None) -> str:
        """The nearest address that is not one of our proxies, walking the chain backwards."""
        if not self._trusted(peer):
            return str(peer) if peer else "-"
        hops: list[str] = []
        for element in request.forwarded:
            if "for" in element:
                hops.append(element["for"])
        if not hops:
            for value in request.headers.getall(hdrs.X_FORWARDED_FOR, ()):
                hops.extend(value.split(","))
        for hop in reversed(hops):
            address = _parse_ip(hop)
            if address is None:
                break
            if not self._trusted(address):
                return str(address)
        return str(peer)

    async def on_request(self, request: web.Request) -> None:
        peer = _parse_ip(request.remote) if request.remote else None
        offered = request.headers.get(self.header)
        if offered is not None and self._trusted(peer) and _VALID_ID.fullmatch(offered):
            request_id = offered
        else:
            request_id = uuid.uuid4().hex
        request[REQUEST_ID] = request_id
        request[CLIENT_IP] = self._client_ip(request, peer)
        request[UPSTREAM].headers[self.header] = request_id
        bind_request_id(request_id)

    def on_response(self, request: web.Request, response: web.StreamResponse) -> None:
        for name in [k for k in response.headers if k.lower() == self._header_lower]:
            response.headers.popall(name)
        response.headers[self.header] = request[REQUEST_ID]
