"""The test vectors of docs/contract.md: read its inputs, compute its outputs with the project's own code.

`python -m tests.contract_vectors --write` rewrites the outputs after a deliberate change of the contract;
tests/unit/test_contract_vectors.py fails whenever the document and the code disagree.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas import catalogue, envelope, wire
from schemas.envelope import Signer
from schemas.visit import VisitEvent

CONTRACT = Path(__file__).resolve().parents[1] / "docs" / "contract.md"
_BLOCK = re.compile(r"<!-- vector (?P<name>[\w.]+) -->\n```(?P<kind>\w+)\n(?P<body>.*?)```", re.S)
HEX_LINE = 64  # characters per line of a hex block


def blocks(text: str) -> dict[str, tuple[str, str]]:
    """Every vector block of the document: name -> (kind, body)."""
    return {m["name"]: (m["kind"], m["body"]) for m in _BLOCK.finditer(text)}


def hex_of(body: str) -> str:
    """A hex block's bytes as one lowercase string, whitespace dropped."""
    return "".join(body.split()).lower()


def compute(text: str) -> dict[str, str]:
    """The output vectors (hex) computed from the document's input vectors."""
    found = blocks(text)
    seed = bytes.fromhex(hex_of(found["key.seed"][1]))
    envelope_fields: dict[str, Any] = json.loads(found["visit.envelope"][1])
    signer = Signer(envelope_fields["key_id"], Ed25519PrivateKey.from_private_bytes(seed))
    event = VisitEvent.model_validate(json.loads(found["visit.event"][1]))
    payload = wire.encode(catalogue.VISIT_EVENT, event.model_dump())
    signed: dict[str, Any] = {
        "clinic_code": envelope_fields["clinic_code"], "key_id": signer.key_id, "event_id": event.event_id,
        "visit_version": event.version, "signed_at": envelope_fields["signed_at"], "payload": payload}
    visit_input = envelope.visit_signing_input(signed)
    signed["signature"] = signer.sign(visit_input)
    out = {
        "key.public": signer.public_key.hex(),
        "visit.key": event.partition_key.encode().hex(),
        "visit.payload": payload.hex(),
        "visit.signing_input": visit_input.hex(),
        "visit.signature": signed["signature"].hex(),
        "visit.message": wire.encode(catalogue.SIGNED_VISIT, signed).hex(),
    }
    for name in ("request", "request_detail", "request_fhir"):
        request = json.loads(found[f"{name}.fields"][1])
        request_input = envelope.request_signing_input(request)
        body = dict(request, signature=signer.sign(request_input))
        out[f"{name}.signing_input"] = request_input.hex()
        out[f"{name}.signature"] = body["signature"].hex()
        out[f"{name}.message"] = wire.encode(catalogue.INTEGRATION_REQUEST, body).hex()
    return out


def formatted(value: str) -> str:
    """A hex string as the document shows it: lines of HEX_LINE characters."""
    return "".join(value[i:i + HEX_LINE] + "\n" for i in range(0, len(value), HEX_LINE))


def rewrite(text: str) -> str:
    """The document with every output vector replaced by its computed value."""
    outputs = compute(text)

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in outputs:
            return match.group(0)
        return f"<!-- vector {name} -->\n```{match['kind']}\n{formatted(outputs[name])}```"

    return _BLOCK.sub(replace, text)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.contract_vectors --write")
    CONTRACT.write_text(rewrite(CONTRACT.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"rewrote the output vectors of {CONTRACT}")
