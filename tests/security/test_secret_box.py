"""Connector credentials at rest (``hub.domain.secrets.SecretBox``): what a repeated open keeps, and what it never
skips."""

from __future__ import annotations

import time

import pytest
from cryptography.fernet import InvalidToken

from hub.domain.secrets import SecretBox
from hub.errors import Unavailable

KEY = "a-long-random-secret-key-for-tests"


def test_a_token_opened_again_is_not_decrypted_again_and_each_caller_gets_its_own_copy() -> None:
    box = SecretBox(KEY)
    token = box.seal({"consumer_secret": "cs_1", "webhook_secret": "w1"})
    first = box.open(token)
    first["webhook_secret"] = "changed by a caller"
    first.pop("consumer_secret")
    assert box.open(token) == {"consumer_secret": "cs_1", "webhook_secret": "w1"}
    assert box._plaintext.cache_info().misses == 1  # decrypted once, for both opens

    resealed = box.seal({"consumer_secret": "cs_1", "webhook_secret": "w2"})  # a rotated secret: a new token
    assert box.open(resealed)["webhook_secret"] == "w2"


def test_an_age_limit_is_checked_at_every_open_even_for_a_token_opened_before() -> None:
    box = SecretBox(KEY)
    old = box._box().encrypt_at_time(b'{"state": "s"}', int(time.time()) - 3600).decode()
    assert box.open(old) == {"state": "s"}  # (kept: opened without an age limit)
    with pytest.raises(InvalidToken):
        box.open(old, ttl=600)
    fresh = box.seal({"state": "t"})
    assert box.open(fresh, ttl=600) == {"state": "t"}


def test_a_token_sealed_under_another_key_is_refused_every_time() -> None:
    token = SecretBox(KEY).seal({"consumer_secret": "cs_1"})
    other = SecretBox("another-long-random-secret-key-for-tests")
    for _ in range(2):
        with pytest.raises(Unavailable):
            other.open(token)
    with pytest.raises(Unavailable):
        SecretBox(None).open(token)
    assert SecretBox(None).open(None) == {}
