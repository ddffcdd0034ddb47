"""Test helper: a facility certificate made on the spot, and dossiers signed with it in CHUKYDONVI."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import XMLSigner

PLACEHOLDER = ('<CHUKYDONVI><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#" Id="placeholder">'
               "</ds:Signature></CHUKYDONVI>")


def facility_certificate(facility: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A fresh key and self-signed certificate for a facility."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Cơ sở KCB {facility}")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=365)).sign(key, hashes.SHA256()))
    return key, certificate


def pem(certificate: x509.Certificate) -> bytes:
    """The certificate in PEM."""
    return certificate.public_bytes(serialization.Encoding.PEM)


def sign_dossier(path: Path, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate,
                 only: str | None = None) -> None:
    """Sign a dossier written with an empty CHUKYDONVI, in place, as a HIS would (enveloped, inclusive C14N).

    With only, the signature's reference covers just the element of that local name (given an Id), as a
    forger would try.
    """
    text = path.read_text(encoding="utf-8").replace("<CHUKYDONVI/>", PLACEHOLDER)
    root = etree.fromstring(text.encode("utf-8"))
    reference = None
    if only:
        next(e for e in root.iter() if etree.QName(e).localname == only).set("Id", "covered")
        reference = "#covered"
    signer = XMLSigner(signature_algorithm="ecdsa-sha256", c14n_algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315")
    signed = signer.sign(root, key=key, cert=[certificate], reference_uri=reference)
    path.write_bytes(etree.tostring(signed, xml_declaration=True, encoding="utf-8"))
