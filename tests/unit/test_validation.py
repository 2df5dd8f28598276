"""Values typed by people: trimming, invisible characters, length limits, e-mail and usernames."""

from __future__ import annotations

import pytest

from appliance.errors import InvalidInput
from appliance.validation import clean_email, clean_text, clean_username


def refused(call: object, *args: object, **kwargs: object) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value


# clean_text


def test_clean_text_trims_surrounding_whitespace() -> None:
    """Leading and trailing whitespace is removed; inner spaces stay."""
    assert clean_text("  Studio  Lumen \t", field="name", max_length=50) == "Studio  Lumen"


def test_clean_text_keeps_letters_from_any_script() -> None:
    """Accented and non-Latin letters are ordinary text."""
    assert clean_text("Atelier Ærø, Łódź 東京", field="name", max_length=50) == (
        "Atelier Ærø, Łódź 東京"
    )


@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_required_text_cannot_be_empty(value: str) -> None:
    """An empty or blank required field is refused, naming the field."""
    error = refused(clean_text, value, field="studio_name", max_length=50)
    assert error.field == "studio_name"
    assert error.message == "This field is required."


def test_optional_text_may_be_empty() -> None:
    """A blank optional field becomes the empty string."""
    assert clean_text("   ", field="note", max_length=50, required=False) == ""


def test_text_at_the_limit_is_accepted_and_one_more_is_refused() -> None:
    """max_length counts characters after trimming; one over is refused with the limit."""
    assert clean_text(" " + "x" * 10 + " ", field="name", max_length=10) == "x" * 10
    error = refused(clean_text, "x" * 11, field="name", max_length=10)
    assert error.field == "name"
    assert error.message == "Use at most 10 characters."


@pytest.mark.parametrize(
    "char",
    [
        "\x00",
        "\x07",
        "\n",
        "\t",
        "\x1b",
        "\x7f",
        "\u200b",  # zero-width space
        "\u200d",  # zero-width joiner
        "\u2060",  # word joiner
        "\ufeff",  # byte-order mark
        "\u202e",  # right-to-left override
        "\u00ad",  # soft hyphen
        "\ud800",  # lone surrogate
        "\u2028",  # line separator: a line break in a mail subject
        "\u2029",  # paragraph separator
        "\x85",  # next line
        "\x0b",  # vertical tab
        "\x0c",  # form feed
    ],
)
def test_control_and_invisible_characters_are_refused(char: str) -> None:
    """Control, format (zero-width, bidi) and surrogate characters inside text are refused."""
    error = refused(clean_text, f"Studio{char}Lumen", field="studio_name", max_length=50)
    assert error.field == "studio_name"
    assert error.message == "Remove the invisible or control characters."


def test_zero_width_only_value_is_not_treated_as_blank() -> None:
    """A value of only a zero-width space is refused for its character, not accepted."""
    error = refused(clean_text, "\u200b", field="name", max_length=10)
    assert error.message == "Remove the invisible or control characters."


# clean_email


@pytest.mark.parametrize(
    ("value", "email"),
    [
        ("olivia@studio.example", "olivia@studio.example"),
        ("  Olivia.Owner+tag@mail.studio-lumen.de ", "Olivia.Owner+tag@mail.studio-lumen.de"),
    ],
)
def test_clean_email_accepts_ordinary_addresses(value: str, email: str) -> None:
    """A usual address is returned trimmed, case kept."""
    assert clean_email(value) == email


@pytest.mark.parametrize(
    "value",
    [
        "olivia",
        "olivia@",
        "@studio.example",
        "olivia@studio",
        "olivia@@studio.example",
        "oli via@studio.example",
        "olivia@-studio.example",
        "olivia@studio.e",
        "olivia@studio_lumen.example",
        "o" * 65 + "@studio.example",
    ],
)
def test_clean_email_refuses_malformed_addresses(value: str) -> None:
    """Addresses without a proper local part and dotted domain are refused, naming the field."""
    error = refused(clean_email, value)
    assert error.field == "email"
    assert error.message == "Enter an e-mail address such as name@example.com."


def test_clean_email_refuses_over_long_address() -> None:
    """An address longer than 254 characters is refused for its length."""
    value = "o@" + ("b" * 60 + ".") * 5 + "example"
    assert len(value) > 254
    error = refused(clean_email, value, field="contact_email")
    assert error.field == "contact_email"
    assert error.message == "Use at most 254 characters."


def test_clean_email_refuses_zero_width_characters() -> None:
    """A zero-width space hidden in an address is refused as an invisible character."""
    error = refused(clean_email, "olivia\u200b@studio.example")
    assert error.field == "email"
    assert error.message == "Remove the invisible or control characters."


def test_clean_email_required_and_optional() -> None:
    """An empty address is refused when required and returned as "" when optional."""
    error = refused(clean_email, "  ")
    assert (error.field, error.message) == ("email", "This field is required.")
    assert clean_email("  ", required=False) == ""


# clean_username


@pytest.mark.parametrize(
    ("value", "username"),
    [
        ("  Olivia.Owner ", "olivia.owner"),
        ("abc", "abc"),
        ("9lives_studio-1", "9lives_studio-1"),
        ("a" * 32, "a" * 32),
    ],
)
def test_clean_username_lowercases_and_accepts_allowed_characters(
    value: str, username: str
) -> None:
    """Usernames are trimmed and lower-cased; letters, digits, dot, dash, underscore pass."""
    assert clean_username(value) == username


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ab",
        "a" * 33,
        ".olivia",
        "-olivia",
        "olivia owner",
        "olivia@studio",
        "olívia",
        "oli\u200bvia",
        "oli\x00via",
        "olivia\nadmin",
    ],
)
def test_clean_username_refuses_bad_values(value: str) -> None:
    """Too short, too long, wrong first character or other characters are refused."""
    error = refused(clean_username, value)
    assert error.field == "username"
    assert error.message.startswith("Use 3 to 32 characters")


def test_clean_username_names_a_custom_field() -> None:
    """The field name given by the caller is the one reported."""
    assert refused(clean_username, "x", field="new_username").field == "new_username"
