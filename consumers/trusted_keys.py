"""The identity platform's public keys the query consumer trusts, from HEALTHBOOK_IDENTITY_KEYS_FILE."""

from __future__ import annotations

import base64
import json
from pathlib import Path


class TrustedKeysMissing(FileNotFoundError):
    """The query consumer has no identity-platform keys to trust."""


def load_trusted_keys(path: Path) -> dict[str, bytes]:
    """Read the identity platform's public keys: a JSON object of key id to base64 raw Ed25519 key."""
    if not path.exists():
        raise TrustedKeysMissing(
            f"no identity-platform keys at {path}; write {{\"key-id\": \"<base64 public key>\"}} there "
            "or set HEALTHBOOK_IDENTITY_KEYS_FILE"
        )
    return {key_id: base64.b64decode(value) for key_id, value in json.loads(path.read_text()).items()}
