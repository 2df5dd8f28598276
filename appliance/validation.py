"""Checks for values that arrive from people: length, characters, e-mail shape.

Each raises :class:`~appliance.errors.InvalidInput` naming the field, so a form can show the
message next to the input that caused it.
"""

from __future__ import annotations

import re
import unicodedata

from appliance.errors import InvalidInput

__all__ = ["clean_email", "clean_text", "clean_username"]

_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,63}$")
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,31}$")


def clean_text(value: str, *, field: str, max_length: int, required: bool = True) -> str:
    """Trimmed text without control characters, within ``max_length``."""
    cleaned = value.strip()
    if required and not cleaned:
        raise InvalidInput("This field is required.", field=field)
    if len(cleaned) > max_length:
        raise InvalidInput(f"Use at most {max_length} characters.", field=field)
    if any(unicodedata.category(char) in {"Cc", "Cf", "Cs"} for char in cleaned):
        raise InvalidInput("Remove the invisible or control characters.", field=field)
    return cleaned


def clean_email(value: str, *, field: str = "email", required: bool = True) -> str:
    cleaned = clean_text(value, field=field, max_length=254, required=required)
    if cleaned and not _EMAIL.match(cleaned):
        raise InvalidInput("Enter an e-mail address such as name@example.com.", field=field)
    return cleaned


def clean_username(value: str, *, field: str = "username") -> str:
    cleaned = value.strip().lower()
    if not _USERNAME.match(cleaned):
        raise InvalidInput(
            "Use 3 to 32 characters: letters, digits, dot, dash or underscore, "
            "starting with a letter or digit.",
            field=field,
        )
    return cleaned
