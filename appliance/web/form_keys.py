"""One-time form keys: a form that creates something (an incident, a maintenance window)
carries a fresh random key, stored on the row it creates under a unique constraint. The same
form sent twice (a double click, a browser resending) then finds the first row instead of
creating a second one, and a second round of notices with it."""

from __future__ import annotations

import re
import secrets

from appliance.errors import InvalidInput

__all__ = ["clean_form_key", "new_form_key"]

_KEY = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def new_form_key() -> str:
    """A key for a form about to be shown."""
    return secrets.token_urlsafe(24)


def clean_form_key(value: str) -> str | None:
    """The key a form sent; None when it sent none (a client that does not render forms)."""
    text = value.strip()
    if not text:
        return None
    if not _KEY.match(text):
        raise InvalidInput("This form is out of date. Reload the page and send it again.")
    return text
