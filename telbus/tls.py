"""Test certificate authority and certificates (PEM), for a broker on loopback.

Used by the security tests and by anyone who wants a local SASL_SSL broker: one CA, and
leaf certificates signed by it for ``localhost`` / ``127.0.0.1`` (server) or for a client
principal (mutual TLS). Kafka 3.9 reads PEM directly (``ssl.keystore.type=PEM``,
``ssl.truststore.type=PEM``), so no JKS and no keytool are needed; librdkafka takes the CA
file as ``ssl.ca.location``.

Keys are EC P-256: generated in milliseconds. Private keys are written PKCS#8 (the form
Kafka's PEM keystore reads), unencrypted unless a password is given, with mode 0600.
Nothing here is meant for production certificates.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFiles:
    """PEM files of one certificate: ``cert`` (leaf + CA chain), ``key``, and ``bundle``
    (key followed by the chain: Kafka's file-based PEM keystore format)."""

    cert: Path
    key: Path
    bundle: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "telbus test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_pem(key, password: str | None) -> bytes:
    enc = (serialization.BestAvailableEncryption(password.encode()) if password
           else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)
    return path


class TestCA:
    """A throwaway certificate authority writing PEM files into ``directory``."""

    __test__ = False   # not a pytest test class

    def __init__(self, directory: Path, name: str = "telbus test CA", days: int = 2):
        self.dir = Path(directory)
        self.days = days
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem = self._cert.public_bytes(serialization.Encoding.PEM)
        self.ca_file = _write(self.dir / "ca.pem", self.cert_pem)

    def issue(self, name: str, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), server: bool = True,
              client: bool = True, key_password: str | None = None) -> CertFiles:
        """A leaf certificate for ``name`` (the CN, hence the mTLS principal ``CN=name,O=telbus test``)
        valid for ``hosts`` (DNS names and IP addresses in the subjectAltName)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        sans: list[x509.GeneralName] = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + \
                 ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=self.days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem
        key_pem = _key_pem(key, key_password)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return CertFiles(cert=_write(self.dir / f"{safe}.crt.pem", chain),
                         key=_write(self.dir / f"{safe}.key.pem", key_pem, private=True),
                         bundle=_write(self.dir / f"{safe}.keystore.pem", key_pem + chain, private=True))


def broker_ssl_properties(ca: TestCA, server: CertFiles, key_password: str | None = None,
                          prefix: str = "") -> dict[str, str]:
    """Kafka broker settings for a PEM keystore/truststore (``prefix``: e.g. ``listener.name.broker.``)."""
    props = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(server.bundle),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca.ca_file),
    }
    if key_password:
        props["ssl.key.password"] = key_password
    return {prefix + k: v for k, v in props.items()}
