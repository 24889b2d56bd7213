"""HTTPS in `electric-proxy serve`: a real TLS client, a certificate renewed by SIGHUP while
the listener and the open connections stay, and `check-config` refusing what cannot load."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import re
import signal
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_cli import SECRET, Served, serving

from electric_proxy import ConfigError, parse_config
from electric_proxy.testing import read_until, run_cli

CHAIN = (
    '[[chain]]\nuse = "policy"\nshapes.todos.where = "done = false"\n'
    '[[chain]]\nuse = "credentials"\nsecret = { "$env" = "ELECTRIC_SECRET" }\n'
)
TLS = 'tls_cert = "cert.pem"\ntls_key = "key.pem"\n'
SHAPE = {"table": "todos", "offset": "-1"}


def self_signed(name: str) -> tuple[bytes, bytes]:
    """A certificate for 127.0.0.1 and its key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def fingerprint(pem_or_der: bytes) -> str:
    der = ssl.PEM_cert_to_DER_cert(pem_or_der.decode()) if b"-----" in pem_or_der else pem_or_der
    return hashlib.sha256(der).hexdigest()


def install(directory: Path, cert: bytes, key: bytes) -> None:
    """Replace the files as a renewal tool does: written aside, then renamed over."""
    for name, data in (("cert.pem", cert), ("key.pem", key)):
        aside = directory / f".{name}.new"
        aside.write_bytes(data)
        aside.replace(directory / name)


def trusting(*certs: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata="".join(c.decode() for c in certs))


async def served_certificate(port: int, context: ssl.SSLContext) -> str:
    """The fingerprint of the certificate a new connection is shown."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return fingerprint(der)


async def sighup_until(served: Served, processes: int, needle: str) -> str:
    """Send SIGHUP until ``processes`` distinct processes logged ``needle``; their lines.

    A worker still starting ignores SIGHUP (it reads the files after that), so the signal
    is sent again until every worker has answered it."""
    pattern = re.compile(re.escape(needle) + r" (\d+)")
    seen: set[str] = set()
    lines = ""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while len(seen) < processes:
        assert loop.time() < deadline, f"only {len(seen)} of {processes} processes: {lines}"
        served.proc.send_signal(signal.SIGHUP)
        with contextlib.suppress(TimeoutError):
            while len(seen) < processes:
                line = (await asyncio.wait_for(served.stdout.readline(), 5)).decode()
                assert line, f"the proxy ended: {lines}"
                lines += line
                seen.update(pattern.findall(line))
    return lines


async def _opened(opened: list[object]) -> None:
    opened.append(None)


@pytest.mark.parametrize("workers", [1, 2], ids=["single", "workers"])
async def test_serve_over_tls_and_renew_the_certificate_on_sighup(
    tmp_path: Path, workers: int
) -> None:
    first, second = self_signed("first"), self_signed("second")
    install(tmp_path, *first)
    args = ["--workers", str(workers)] if workers > 1 else []
    env = {"ELECTRIC_SECRET": SECRET}
    async with serving(tmp_path, CHAIN, *args, env=env, server=TLS) as served:
        served.output += await read_until(
            served.stdout, "serving" if workers > 1 else "Running on https://"
        )
        port = int(served.url.split(":")[2].split("/")[0])
        url = f"https://127.0.0.1:{port}/v1/shape"
        old_context = trusting(first[0])
        # One keep-alive connection across the renewal: it must outlive it.
        opened: list[object] = []
        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(lambda *args: _opened(opened))
        async with aiohttp.ClientSession(trace_configs=[trace]) as kept:
            # Trusting only the first certificate: the handshake proves which one was shown.
            async with kept.get(url, params=SHAPE, ssl=old_context) as resp:
                assert resp.status == 200
                assert (await resp.json())[0]["headers"]["operation"] == "insert"
            assert await served_certificate(port, old_context) == fingerprint(first[0])
            # Plain HTTP on the TLS port gets no answer.
            with pytest.raises(aiohttp.ClientError):
                async with aiohttp.ClientSession() as plain:
                    await plain.get(f"http://127.0.0.1:{port}/v1/shape", params=SHAPE)

            install(tmp_path, *second)
            await sighup_until(served, workers, "TLS certificate reloaded in process")
            both = trusting(first[0], second[0])
            new = fingerprint(second[0])
            for _ in range(4 * workers):  # new connections, spread over the workers
                assert await served_certificate(port, both) == new
            async with aiohttp.ClientSession() as fresh:
                async with fresh.get(url, params=SHAPE, ssl=trusting(second[0])) as resp:
                    assert resp.status == 200
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await fresh.get(url, params=SHAPE, ssl=old_context)
            # The connection opened before the renewal is still served (it was reused).
            async with kept.get(url, params=SHAPE, ssl=old_context) as resp:
                assert resp.status == 200
            assert len(opened) == 1

            # A renewal that does not load keeps the certificate in use.
            (tmp_path / "key.pem").write_bytes(first[1])
            served.proc.send_signal(signal.SIGHUP)
            refused = await sighup_until(served, workers, "not reloaded in process")
            assert "certificate and key cannot be used together" in refused
            assert await served_certificate(port, both) == new
    assert served.proc.returncode == 0, served.output


def server_problems(tmp_path: Path, **options: str) -> list[str]:
    raw = {"upstream": {"url": "http://electric:3000/v1/shape"}, "server": options}
    try:
        parse_config(raw, base=tmp_path)
    except ConfigError as exc:
        return exc.problems
    return []


def test_check_config_refuses_what_cannot_serve_tls(tmp_path: Path) -> None:
    cert, key = self_signed("proxy")
    _, other_key = self_signed("other")
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    (tmp_path / "other.key").write_bytes(other_key)
    (tmp_path / "certs").mkdir()

    assert server_problems(tmp_path, tls_cert="cert.pem", tls_key="key.pem") == []
    # Relative to the config file: the same pair by its absolute path.
    absolute = str(tmp_path / "cert.pem")
    assert server_problems(Path("/"), tls_cert=absolute, tls_key=str(tmp_path / "key.pem")) == []

    (only,) = server_problems(tmp_path, tls_cert="cert.pem")
    assert "set both tls_cert and tls_key" in only
    (missing,) = server_problems(tmp_path, tls_cert="cert.pem", tls_key="missing.key")
    assert missing.startswith("server.tls_key") and "No such file or directory" in missing
    (unreadable,) = server_problems(tmp_path, tls_cert="certs", tls_key="key.pem")
    assert unreadable.startswith("server.tls_cert") and "Is a directory" in unreadable
    (mismatch,) = server_problems(tmp_path, tls_cert="cert.pem", tls_key="other.key")
    assert "cannot be used together" in mismatch
    (not_pem,) = server_problems(tmp_path, tls_cert="key.pem", tls_key="key.pem")
    assert "cannot be used together" in not_pem


async def test_without_tls_sighup_is_logged_and_ignored(tmp_path: Path) -> None:
    async with serving(tmp_path, CHAIN, env={"ELECTRIC_SECRET": SECRET}) as served:
        await read_until(served.stdout, "Running on http://")
        served.proc.send_signal(signal.SIGHUP)
        await read_until(served.stdout, "SIGHUP: no TLS certificate to reload")
        async with (
            aiohttp.ClientSession() as session,
            session.get(served.url, params=SHAPE) as resp,
        ):
            assert resp.status == 200
    assert served.proc.returncode == 0, served.output


def test_check_config_exits_1_on_half_a_tls_setting(tmp_path: Path) -> None:
    cert, key = self_signed("proxy")
    install(tmp_path, cert, key)
    upstream = '[upstream]\nurl = "http://electric:3000/v1/shape"\n'
    config = tmp_path / "proxy.toml"
    config.write_text(f'[server]\ntls_cert = "cert.pem"\n{upstream}')
    refused = run_cli("check-config", str(config))
    assert refused.returncode == 1
    assert "set both tls_cert and tls_key" in refused.stderr
    config.write_text(f"[server]\n{TLS}{upstream}")
    assert run_cli("check-config", str(config)).returncode == 0
