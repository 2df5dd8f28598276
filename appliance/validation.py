"""Checks for values that arrive from people: length, characters, e-mail shape.

Each raises :class:`~appliance.errors.InvalidInput` naming the field, so a form can show the
message next to the input that caused it.
"""

from __future__ import annotations

import re
import unicodedata

from appliance.errors import InvalidInput

__all__ = [
    "MAX_ID",
    "clean_email",
    "clean_multiline",
    "clean_text",
    "clean_username",
    "parse_count",
    "parse_id",
]

_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,63}$")
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,31}$")
_CONTROL = {"Cc", "Cf", "Cs"}
# One-line text also refuses the line and paragraph separators (U+2028, U+2029): they break a
# line wherever the text goes, an e-mail subject included. (U+0085, \v and \f are Cc.)
_NOT_IN_ONE_LINE = _CONTROL | {"Zl", "Zp"}
# A count: plain digits, or groups of three behind one kind of thousands separator (English,
# German, Swiss, typographic spaces). Twelve digits at most, before comparing to a maximum.
_COUNT = re.compile(r"[0-9]{1,12}|[0-9]{1,3}([ .,'_\u00a0\u202f])[0-9]{3}(?:\1[0-9]{3}){0,2}")
_SEPARATOR = re.compile(r"[ .,'_\u00a0\u202f]")
_ID = re.compile(r"[0-9]{1,10}")
MAX_ID = 2**31 - 1  # the largest PostgreSQL integer (serial ids)


def clean_text(value: str, *, field: str, max_length: int, required: bool = True) -> str:
    """Trimmed text without control characters, within ``max_length``."""
    cleaned = value.strip()
    if required and not cleaned:
        raise InvalidInput("This field is required.", field=field)
    if len(cleaned) > max_length:
        raise InvalidInput(f"Use at most {max_length} characters.", field=field)
    if any(unicodedata.category(char) in _NOT_IN_ONE_LINE for char in cleaned):
        raise InvalidInput("Remove the invisible or control characters.", field=field)
    return cleaned


def clean_multiline(value: str, *, field: str, max_length: int, required: bool = False) -> str:
    """Like :func:`clean_text`, but line breaks (stored as ``\\n``) and tabs are kept."""
    text = value.replace("\r\n", "\n").replace("\r", "\n").strip()
    if required and not text:
        raise InvalidInput("This field is required.", field=field)
    if len(text) > max_length:
        raise InvalidInput(f"Use at most {max_length:,} characters.", field=field)
    if any(char not in "\n\t" and unicodedata.category(char) in _CONTROL for char in text):
        raise InvalidInput("Remove the invisible or control characters.", field=field)
    return text


def parse_count(value: str, *, field: str, maximum: int) -> int | None:
    """A whole number typed by a person ("120", "1.200", "1,200", "~3 000"); None when empty.

    Separators must group thousands, the same one throughout: "1.5" and "1,5" are refused,
    not read as 15 (a German decimal comma or an English decimal point would otherwise turn
    a typo into a number ten or a thousand times off). Only ASCII digits count:
    ``"²".isdigit()`` is true, but it is not a number anyone meant."""
    text = value.strip().lstrip("~").strip()
    if not text:
        return None
    if not _COUNT.fullmatch(text) or int(digits := _SEPARATOR.sub("", text)) > maximum:
        raise InvalidInput(
            f"Enter a whole number up to {maximum:,}, e.g. 120 (an estimate is fine).",
            field=field,
        )
    return int(digits)


def parse_id(text: str, *, field: str) -> int:
    """The id of a row as a form sends it (``"12"``): ASCII digits, from 1 to the largest
    value a PostgreSQL ``integer`` holds, so a hostile value gets this message instead of an
    error from the database."""
    cleaned = text.strip()
    if not _ID.fullmatch(cleaned) or not 1 <= int(cleaned) <= MAX_ID:
        raise InvalidInput(f"{cleaned[:20]!r} is not a valid id.", field=field)
    return int(cleaned)


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
