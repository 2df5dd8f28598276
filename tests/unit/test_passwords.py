"""Password hashing with argon2id and the strength rule for new passwords."""

from __future__ import annotations

import pytest

from appliance.accounts.passwords import (
    MAX_PASSWORD_LENGTH,
    check_strength,
    hash_password,
    verify_password,
)
from appliance.errors import InvalidInput

PASSPHRASE = "quiet harbour lantern 42 maple"


@pytest.fixture(scope="module")
def passphrase_hash() -> str:
    return hash_password(PASSPHRASE)


def test_hash_is_argon2id_phc_string(passphrase_hash: str) -> None:
    """The stored hash is an argon2id PHC string and does not contain the password."""
    assert passphrase_hash.startswith("$argon2id$")
    assert PASSPHRASE not in passphrase_hash


@pytest.mark.shipped_password_cost
def test_the_shipped_cost_is_above_the_owasp_minimum() -> None:
    """argon2id with at least 19 MiB of memory and two passes (OWASP's least setting); the
    shipped hasher uses 64 MiB and three."""
    fields = dict(field.split("=") for field in hash_password(PASSPHRASE).split("$")[3].split(","))
    assert int(fields["m"]) >= 19 * 1024 and int(fields["t"]) >= 2, fields
    assert (int(fields["m"]), int(fields["t"])) == (65536, 3)


def test_hashes_are_salted(passphrase_hash: str) -> None:
    """Hashing the same password twice gives two different strings."""
    assert hash_password(PASSPHRASE) != passphrase_hash


def test_verify_accepts_the_right_password(passphrase_hash: str) -> None:
    """The password that was hashed verifies."""
    assert verify_password(PASSPHRASE, passphrase_hash) is True


@pytest.mark.parametrize("attempt", ["quiet harbour lantern 42 maplE", "", PASSPHRASE + " "])
def test_verify_refuses_a_wrong_password(passphrase_hash: str, attempt: str) -> None:
    """Any other password, even one character off, does not verify."""
    assert verify_password(attempt, passphrase_hash) is False


def test_verify_without_hash_is_false() -> None:
    """An unknown user (no hash) is answered False rather than raising."""
    assert verify_password(PASSPHRASE, None) is False


def test_verify_against_a_malformed_hash_is_false() -> None:
    """A stored value that is not a hash makes verification fail, not crash."""
    assert verify_password(PASSPHRASE, "not-a-hash") is False


def strength_error(password: str, user_inputs: list[str] | None = None) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        check_strength(password, min_length=12, user_inputs=user_inputs or [])
    assert caught.value.field == "password"
    return caught.value


def test_short_password_is_refused_with_the_minimum() -> None:
    """A password shorter than min_length is refused, naming the minimum."""
    assert strength_error("Tr0ub4dor&3").message == "Use at least 12 characters."


def test_minimum_length_comes_from_the_argument() -> None:
    """The configured minimum, not a constant, decides what is short."""
    with pytest.raises(InvalidInput, match="at least 40 characters") as caught:
        check_strength(PASSPHRASE, min_length=40, user_inputs=[])
    assert caught.value.field == "password"


def test_over_long_password_is_refused() -> None:
    """A password longer than 256 characters is refused before any strength check."""
    error = strength_error("correct horse battery staple " * 9)
    assert error.message == f"Use at most {MAX_PASSWORD_LENGTH} characters."
    assert MAX_PASSWORD_LENGTH == 256


def test_pass_phrase_of_72_characters_is_accepted() -> None:
    """A 72-character pass phrase is checked and accepted."""
    password = "a quiet harbour lantern glows at dusk while forty two maple leaves drift"
    assert len(password) == 72
    assert check_strength(password, min_length=12, user_inputs=[]) is None


@pytest.mark.parametrize("length", [73, MAX_PASSWORD_LENGTH])
def test_long_pass_phrase_up_to_the_maximum_is_accepted(length: int) -> None:
    """Pass phrases longer than 72 and up to 256 characters are accepted, not an error."""
    password = ("a quiet harbour lantern glows at dusk while forty two maple leaves drift " * 4)[
        :length
    ]
    assert len(password) == length
    assert check_strength(password, min_length=12, user_inputs=[]) is None


def test_common_password_is_refused_as_guessable() -> None:
    """ "Password1234" is long enough but too easy to guess."""
    assert strength_error("Password1234").message.startswith("This password is too easy to guess.")


def test_username_as_password_is_refused() -> None:
    """A password equal to the username is refused, though it would pass on its own."""
    username = "olivia.owner.studio"
    check_strength(username, min_length=12, user_inputs=[])
    error = strength_error(username, user_inputs=[username, "Olivia Owner"])
    assert error.message.startswith("This password is too easy to guess.")


def test_pass_phrase_is_accepted() -> None:
    """A pass phrase of unrelated words and a number is strong enough."""
    assert check_strength(PASSPHRASE, min_length=12, user_inputs=["olivia", ""]) is None
