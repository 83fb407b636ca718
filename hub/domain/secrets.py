"""Connector credentials at rest: Fernet (AES-128-CBC + HMAC-SHA256) under a key derived from HUB_SECRET_KEY."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hub.errors import Unavailable


class SecretBox:
    def __init__(self, secret_key: str | None) -> None:
        self._fernet: Fernet | None = None
        if secret_key:
            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"fashion-hub connection secrets")
            self._fernet = Fernet(base64.urlsafe_b64encode(key.derive(secret_key.encode())))

    def _box(self) -> Fernet:
        if self._fernet is None:
            raise Unavailable("secret storage", "connections need HUB_SECRET_KEY to encrypt credentials")
        return self._fernet

    def seal(self, values: dict[str, Any]) -> str:
        return self._box().encrypt(json.dumps(values).encode()).decode()

    def open(self, token: str | None, ttl: int | None = None) -> dict[str, Any]:
        """The sealed values; with ``ttl``, ``InvalidToken`` if the token is older than that many seconds."""
        if not token:
            return {}
        if ttl is not None:
            return dict(json.loads(self._box().decrypt(token.encode(), ttl=ttl)))
        try:
            return dict(json.loads(self._box().decrypt(token.encode())))
        except InvalidToken:
            raise Unavailable(
                "secret storage", "stored credentials do not decrypt: was HUB_SECRET_KEY changed?"
            ) from None
