"""TLS for ``electric-proxy serve``: the server's context, and its certificate renewed live.

``[server] tls_cert`` and ``tls_key`` are PEM files (the certificate chain, leaf first, and
its unencrypted private key). The context is Python's server-side default
(``ssl.create_default_context(Purpose.CLIENT_AUTH)``: its cipher choice and options) with
TLS 1.2 as the oldest version.

Certificates are renewed (ACME, every 60 to 90 days) while clients hold long-polls and SSE
streams, so a restart to pick up a new one would cut every held request. On SIGHUP the
files are read again into the *same* context the listener uses: OpenSSL takes the
certificate of each new handshake from the context, so new connections get the new
certificate while open ones keep theirs and nothing is unbound. A pair that does not load
(a half-written file, a key of another certificate) is refused with an error line and the
previous certificate stays in use; it is first loaded into a scratch context, because a
failure halfway through loading into the live one could leave it with a new certificate
and the old key.
"""

from __future__ import annotations

import logging
import os
import ssl

__all__ = ["reload_certificate", "server_context", "tls_problem"]

log = logging.getLogger("electric_proxy.tls")


def _no_password() -> str:
    # Without a callback OpenSSL would ask for an encrypted key's passphrase on the terminal.
    return ""


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server-side context with ``cert`` and ``key`` loaded; raises ``OSError`` or
    ``ssl.SSLError`` when they cannot be used."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key, password=_no_password)
    return context


def tls_problem(cert: str, key: str) -> str | None:
    """Why ``cert`` and ``key`` cannot serve TLS, in words, or ``None``."""
    try:
        server_context(cert, key)
    except ssl.SSLError as exc:
        reason = exc.reason or type(exc).__name__
        return (
            f"the certificate and key cannot be used together ({reason}): a PEM certificate "
            "chain and its own unencrypted private key are expected"
        )
    except OSError as exc:
        return f"cannot read them: {exc.strerror}"
    return None


def reload_certificate(context: ssl.SSLContext, cert: str, key: str) -> bool:
    """Load ``cert`` and ``key`` again into the live ``context``, if they load; whether
    they did. Logs the outcome either way, with the process ID: with ``--workers`` each
    worker reloads its own."""
    problem = tls_problem(cert, key)
    if problem is not None:
        log.error(
            "TLS certificate not reloaded in process %d, the previous one stays in use: %s",
            os.getpid(),
            problem,
        )
        return False
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except (OSError, ssl.SSLError) as exc:  # the files changed again since the check
        log.error(
            "TLS certificate reload failed in process %d: %s", os.getpid(), type(exc).__name__
        )
        return False
    log.info("TLS certificate reloaded in process %d", os.getpid())
    return True
