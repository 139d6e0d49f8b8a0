"""Throw-away TLS material for broker tests, made with `cryptography` (no openssl CLI needed).

    ca            the test CA: signs the server certificate and the client certificate
    server        127.0.0.1 (IP SAN) + localhost (DNS SAN), serverAuth
    client        CN=edgewatch-test-client, clientAuth, signed by ca
    other_ca      an unrelated CA (the "wrong CA" for both sides)
    other_client  a client certificate signed by other_ca (refused by an mTLS broker)
    other_server  127.0.0.1 + localhost, signed by other_ca (what a broker presents to a client
                  that trusts other_ca: the "broker fixed" side of a wrong-CA test)
    wrong_name    a server certificate from ca for "not-this-host.invalid" only (fails the
                  client's host name check when the broker is reached as 127.0.0.1)

EC P-256 keys (fast to make), valid from an hour ago for two days. Keys are written
unencrypted, mode 0600, into the folder given; nothing here is fit for production.
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

__all__ = ["CertPair", "TLSMaterial", "make_tls_material"]


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class TLSMaterial:
    directory: Path
    ca: CertPair
    server: CertPair
    client: CertPair
    other_ca: CertPair
    other_client: CertPair
    wrong_name: CertPair
    other_server: CertPair


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgewatch tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _save(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> CertPair:
    pair = CertPair(directory / f"{stem}.crt", directory / f"{stem}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(pair.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return pair


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:  # self-signed
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(_name(common_name), _name(common_name), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


_Signed = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _make_leaf(
    common_name: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    server: bool,
    names: tuple[x509.GeneralName, ...] = (),
) -> _Signed:
    """A leaf certificate; a server's `names` go into its subjectAltName (what clients check)."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(_name(common_name), ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_tls_material(directory: Path) -> TLSMaterial:
    """Write the certificates and keys listed in the module docstring into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _make_ca("edgewatch test CA")
    other_cert, other_key = _make_ca("unrelated test CA")
    loopback = (x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"))
    elsewhere = (x509.DNSName("not-this-host.invalid"),)
    client = "edgewatch-test-client"
    return TLSMaterial(
        directory=directory,
        ca=_save(directory, "ca", ca_cert, ca_key),
        server=_save(directory, "server", *_make_leaf("127.0.0.1", ca_cert, ca_key, server=True, names=loopback)),
        client=_save(directory, "client", *_make_leaf(client, ca_cert, ca_key, server=False)),
        other_ca=_save(directory, "other-ca", other_cert, other_key),
        other_client=_save(directory, "other-client", *_make_leaf(client, other_cert, other_key, server=False)),
        wrong_name=_save(
            directory, "wrong-name", *_make_leaf("not-this-host.invalid", ca_cert, ca_key, server=True, names=elsewhere)
        ),
        other_server=_save(
            directory, "other-server", *_make_leaf("127.0.0.1", other_cert, other_key, server=True, names=loopback)
        ),
    )
