"""Challenge/response authentication (protocol.md §2.1 test vectors, golden 00)."""

from __future__ import annotations

import re

import pytest

from evqueue.protocol.auth import check_response, expected_response, new_challenge, sha1_hex
from evqueue.protocol.errors import ApiError

ADMIN_SHA1 = "d033e22ae348aeb5660fc2140aec35850c4da997"


def test_sha1_hex_of_the_default_password() -> None:
    assert sha1_hex("admin") == ADMIN_SHA1
    assert sha1_hex("é") == "bf15be717ac1b080b4f1c456692825891ff5073d"  # UTF-8 bytes


@pytest.mark.parametrize(
    ("challenge", "response"),
    [
        ("00000000000000000000000000000000000000ff", "605f419d26b841224d794520f3dd139dcd9dc11b"),
        ("9b1e0c6f5d2a4e7f8a9b0c1d2e3f405162738495", "a62122bbe6a53b9581f7f0b1854482935ff42794"),
        # golden 00-handshake
        ("b710e0e78b81daed2f38d7b863f213126823bcb4", "3ddb306f76e446a3aabc4d1870fcbc809f305d86"),
    ],
)
def test_vectors(challenge: str, response: str) -> None:
    assert expected_response(ADMIN_SHA1, challenge) == response
    assert expected_response(ADMIN_SHA1.upper(), challenge) == response  # stored hex: any case
    assert check_response(ADMIN_SHA1, challenge, response)


def test_uppercase_response_is_rejected() -> None:
    challenge = "9b1e0c6f5d2a4e7f8a9b0c1d2e3f405162738495"
    assert not check_response(ADMIN_SHA1, challenge, "A62122BBE6A53B9581F7F0B1854482935FF42794")


@pytest.mark.parametrize("response", ["hmac", "", "a62122bb", "é" * 40, "\udcff"])
def test_bogus_responses_are_rejected(response: str) -> None:
    assert not check_response(ADMIN_SHA1, "9b1e0c6f5d2a4e7f8a9b0c1d2e3f405162738495", response)


@pytest.mark.parametrize("stored", ["not hex", "abc", "d0 33", "é"])
def test_invalid_stored_password(stored: str) -> None:
    with pytest.raises(ApiError) as info:
        expected_response(stored, "00")
    assert (info.value.code, info.value.message) == (
        "UNEXPECTED_EXCEPTION",
        "Invalid hexadecimal string",
    )
    assert info.value.fatal


def test_challenges_are_40_lowercase_hex_and_unpredictable() -> None:
    challenges = {new_challenge() for _ in range(100)}
    assert len(challenges) == 100
    assert all(re.fullmatch("[0-9a-f]{40}", c) for c in challenges)
