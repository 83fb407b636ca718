"""Connector credentials at rest: Fernet (AES-128-CBC + HMAC-SHA256) under a key derived from HUB_SECRET_KEY."""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hub.errors import Unavailable


OPENED_KEPT = 4096  # sealed values whose plaintext is kept, the least recently opened dropped first


class SecretBox:
    """Sealed values open once per process: a webhook delivery opens its connection's secrets to check the signature,
    and at hundreds of deliveries a second decrypting the same token each time was a measurable part of the intake's
    CPU (``docs/benchmarks.md``). The plaintext is kept by its token (a changed secret is a new token); tokens with
    an age limit (``ttl``) are decrypted, and their age checked, every time."""

    def __init__(self, secret_key: str | None) -> None:
        self._fernet: Fernet | None = None
        if secret_key:
            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"fashion-hub connection secrets")
            self._fernet = Fernet(base64.urlsafe_b64encode(key.derive(secret_key.encode())))
        self._plaintext = functools.lru_cache(maxsize=OPENED_KEPT)(self._decrypt)

    def _decrypt(self, token: str) -> bytes:
        return self._box().decrypt(token.encode())

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
            return dict(json.loads(self._plaintext(token)))  # (a new dict each time: a caller may change its copy)
        except InvalidToken:
            raise Unavailable(
                "secret storage", "stored credentials do not decrypt: was HUB_SECRET_KEY changed?"
            ) from None
