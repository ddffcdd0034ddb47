"""Test helper: a facility certificate made on the spot, and dossiers signed with it in CHUKYDONVI."""

from __future__ import annotations

import base64
import datetime
import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from lxml import etree
from signxml import XMLSigner

from commands.local_ca import Authority
from domain.registry_trust import clinic_subject

DSIG = "http://www.w3.org/2000/09/xmldsig#"
PLACEHOLDER = ('<CHUKYDONVI><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#" Id="placeholder">'
               "</ds:Signature></CHUKYDONVI>")


def facility_certificate(facility: str, issuer: Authority | None = None,
                         key: ec.EllipticCurvePrivateKey | None = None) -> tuple[ec.EllipticCurvePrivateKey,
                                                                                  x509.Certificate]:
    """An ECDSA key (fresh unless given) and its certificate for a facility: from the issuing CA, else self-signed."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    if issuer is not None:
        return key, issuer.issue(clinic_subject(facility), key.public_key(), 365)
    name = clinic_subject(facility)  # the right subject, so only the issuer is wrong
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


BASE64_TRANSFORM = "http://www.w3.org/2000/09/xmldsig#base64"


def sign_covering_nothing(path: Path, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
    """Sign a dossier as a forger would want a facility to once: a Reference whose base64 Transform digests no content.

    The base64 transform decodes the root's whitespace text to no bytes at all, so the digest is that
    of nothing and the same SignedInfo verifies over any document with the signature copied into it.
    """
    sign_dossier(path, key, certificate)
    root = etree.parse(str(path)).getroot()
    signed_info = root.find(f".//{{{DSIG}}}SignedInfo")
    transforms = signed_info.find(f".//{{{DSIG}}}Transforms")
    for transform in list(transforms):
        transforms.remove(transform)
    etree.SubElement(transforms, f"{{{DSIG}}}Transform", Algorithm=BASE64_TRANSFORM)
    signed_info.find(f".//{{{DSIG}}}DigestValue").text = base64.b64encode(hashlib.sha256(b"").digest()).decode()
    der = key.sign(etree.tostring(signed_info, method="c14n"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    root.find(f".//{{{DSIG}}}SignatureValue").text = base64.b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")
                                                                      ).decode()
    path.write_bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))


def transplant_signature(signed: Path, onto: Path) -> None:
    """Copy the signature element of one signed dossier into another, unsigned one."""
    text = signed.read_bytes()
    start, end = text.index(b"<ds:Signature"), text.index(b"</ds:Signature>") + len(b"</ds:Signature>")
    target = onto.read_text(encoding="utf-8").replace("<CHUKYDONVI/>", f"<CHUKYDONVI>{text[start:end].decode()}"
                                                      "</CHUKYDONVI>")
    onto.write_text(target, encoding="utf-8")
