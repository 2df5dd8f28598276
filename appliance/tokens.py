"""Bearer tokens (sessions, invitations, resets, the setup token): made random, stored hashed.

A token carries 256 random bits, so a plain SHA-256 is enough to store it: nobody can search
that space, and a leaked database holds nothing that opens a session or a link.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["new_token", "same", "token_digest"]


def new_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What is stored and looked up in place of ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def same(expected: str, given: str) -> bool:
    """Constant-time equality of two strings, whatever characters ``given`` holds.

    ``hmac.compare_digest`` raises TypeError on ``str`` with non-ASCII characters, which
    anyone could send; compared as UTF-8 bytes, such a value is simply unequal.
    """
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))
