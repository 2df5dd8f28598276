"""Bearer tokens and the constant-time comparison every secret check goes through."""

from __future__ import annotations

import pytest

from appliance.tokens import new_token, same, token_digest


def test_tokens_are_256_bit_and_stored_as_their_sha256() -> None:
    first, second = new_token(), new_token()
    assert first != second and len(first) == 43
    assert len(token_digest(first)) == 64 and token_digest(first) != first


@pytest.mark.parametrize(
    "given",
    ["", "a" * 63, "é" * 64, "\x00" * 64, "\ud800", "a" * 65, "A" * 64],
)
def test_odd_values_are_simply_unequal(given: str) -> None:
    assert same("a" * 64, given) is False


def test_equal_values_are_equal() -> None:
    digest = token_digest("x")
    assert same(digest, str(digest))
