"""The language a person's e-mail is written in: their own when the templates have it, else the
studio's default.

Staff members and clients store a language code, or ``""`` for "the studio's default"; forms
offer exactly :func:`choices`, and :func:`clean_language` refuses anything else.
"""

from __future__ import annotations

from appliance.errors import InvalidInput
from appliance.notify.messages import LANGUAGES

__all__ = ["LANGUAGE_NAMES", "choices", "clean_language", "language_for"]

# Each language under its own name, as people look for it in a list.
LANGUAGE_NAMES = {"en": "English", "de": "Deutsch"}
STUDIO_DEFAULT = "Studio default"


def choices(default: str = "") -> list[tuple[str, str]]:
    """``(value, label)`` of every language a form offers, "Studio default" (``""``) first,
    naming the studio's ``default`` language when given."""
    first = STUDIO_DEFAULT
    if default in LANGUAGES:
        first = f"{STUDIO_DEFAULT} ({LANGUAGE_NAMES.get(default, default)})"
    return [("", first)] + [(code, LANGUAGE_NAMES.get(code, code)) for code in LANGUAGES]


def clean_language(value: str, *, field: str = "language") -> str:
    """``value`` when it is ``""`` or a language the templates have; else a refusal naming
    ``field``."""
    cleaned = value.strip()
    if cleaned and cleaned not in LANGUAGES:
        names = ", ".join(LANGUAGE_NAMES.get(code, code) for code in LANGUAGES)
        raise InvalidInput(f"Choose the studio default or one of: {names}.", field=field)
    return cleaned


def language_for(own: str, default: str) -> str:
    """The language to write to a person in: ``own`` when the templates have it, else
    ``default`` (the studio's), else English."""
    if own in LANGUAGES:
        return own
    return default if default in LANGUAGES else "en"
