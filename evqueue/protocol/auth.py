"""Challenge/response authentication of protocol.md §2.1.

response = hex(HMAC-SHA1(key = SHA1(password) as raw bytes, msg = challenge as raw bytes)).
The reference also accepted the literal response "hmac" for any user; we do not.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import secrets

from evqueue.protocol.errors import ApiError

__all__ = ["check_response", "expected_response", "new_challenge", "sha1_hex"]


def new_challenge() -> str:
    """20 unpredictable bytes as 40 lowercase hex characters."""
    return secrets.token_hex(20)


def sha1_hex(password: str) -> str:
    """The stored form of a password: lowercase hex SHA-1 of its UTF-8 bytes."""
    return hashlib.sha1(password.encode("utf-8")).hexdigest()


def expected_response(password_sha1_hex: str, challenge_hex: str) -> str:
    """The lowercase hex response a client holding the password must send."""
    try:
        key = binascii.unhexlify(password_sha1_hex)  # strict: no blanks, unlike bytes.fromhex
        msg = binascii.unhexlify(challenge_hex)
    except (ValueError, TypeError):
        raise ApiError("UNEXPECTED_EXCEPTION", "Invalid hexadecimal string", fatal=True) from None
    return hmac.new(key, msg, hashlib.sha1).hexdigest()


def check_response(password_sha1_hex: str, challenge_hex: str, response: str) -> bool:
    """Constant-time, case-sensitive comparison of the client's response (as the reference)."""
    expected = expected_response(password_sha1_hex, challenge_hex)
    return hmac.compare_digest(expected.encode(), response.encode("utf-8", "surrogatepass"))
