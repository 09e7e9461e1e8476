"""A test certificate authority and a NATS server running the production configuration."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from bangfu.cli import app
from shared.natsserver import NatsServer, free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {
    user: f"{user}-secret" for user in ("registry", "verification", "benefits", "notifications")
} | {"sandbox": "sandbox-secret", "ops": "ops-secret"}


def write_tls(directory: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 and `nats`, as nats.conf expects them."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)

    def certificate(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None = None
    ) -> x509.CertificateBuilder:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        certificate("Bangfu test CA", ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        certificate("nats", server_key, ca.subject)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("nats"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.crt").write_bytes(ca.public_bytes(pem))
    (directory / "tls.crt").write_bytes(server.public_bytes(pem))
    (directory / "tls.key").write_bytes(
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return directory


@dataclass(frozen=True)
class SecuredNats:
    port: int
    ca_file: Path
    log_file: Path

    def violations(self) -> list[str]:
        """The server's log lines about refused publishes and subscriptions."""
        return [line for line in self.log_file.read_text().splitlines() if "Violation" in line]

    def url(self, user: str | None = None, password: str | None = None) -> str:
        credentials = f"{user}:{password or PASSWORDS[user]}@" if user else ""
        return f"tls://{credentials}127.0.0.1:{self.port}"

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


INTEGRATOR = ("nanyang-civil-affairs", "acme-pass-4113")


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[SecuredNats]:
    """deploy/nats/production.conf as committed (TLS and store paths moved), its auth.conf
    with the block `bangfu nats-user nanyang-civil-affairs --regions 4113` printed pasted in."""
    directory = tmp_path / "nats"
    tls = write_tls(directory / "tls")
    config = (ROOT / "deploy" / "nats" / "production.conf").read_text()
    for committed, here in (("/etc/nats/tls/", f"{tls}/"), ("/data/jetstream", "store")):
        assert committed in config
        config = config.replace(committed, str(directory / here) if here == "store" else here)
    (directory / "nats.conf").write_text(config)
    name, password = INTEGRATOR
    printed = CliRunner().invoke(
        app, ["nats-user", name, "--regions", "4113", "--password", password]
    )
    assert printed.exit_code == 0, printed.output
    auth = (ROOT / "deploy" / "nats" / "auth.conf").read_text()
    closing = "\n  ]\n}\n"
    assert auth.endswith(closing)
    pasted = auth.removesuffix(closing) + "\n" + printed.stdout + closing
    (directory / "auth.conf").write_text(pasted)
    server = NatsServer(
        port=free_port(),
        store_dir=directory / "store",
        log_file=directory / "nats.log",
        config_file=directory / "nats.conf",
        env={f"BANGFU_NATS_{user.upper()}_PASSWORD": pw for user, pw in PASSWORDS.items()},
    )
    server.start()
    try:
        yield SecuredNats(port=server.port, ca_file=tls / "ca.crt", log_file=directory / "nats.log")
    finally:
        server.stop()
