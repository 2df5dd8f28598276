"""Password hashing (argon2id through libpass) and the strength rule for new passwords."""

from __future__ import annotations

import functools

import anyio
import anyio.to_thread
import zxcvbn
from passlib.hash import argon2

from appliance.errors import InvalidInput

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "UNUSABLE_HASH",
    "check_strength",
    "hash_password",
    "hash_password_async",
    "verify_password",
    "verify_password_async",
]

# Long enough for any pass phrase, short enough that hashing it cannot be used to burn CPU.
MAX_PASSWORD_LENGTH = 256
_hasher = argon2.using(type="ID")
# Load the backend now: passlib loads it lazily, which fails when first done on a worker thread.
argon2.set_backend("argon2_cffi")
# Stored instead of a hash when a password must not work any more (a reset that also removed
# the second factor); no password verifies against it.
UNUSABLE_HASH = "!unusable"
# argon2 takes ~0.1 s of CPU: run it on threads, at most two at once (one per core), so the
# event loop keeps serving other requests while sign-ins are checked.
_argon2_slots = anyio.CapacityLimiter(2)


def hash_password(password: str) -> str:
    """A salted argon2id hash in PHC string form."""
    return str(_hasher.hash(password))


def verify_password(password: str, password_hash: str | None) -> bool:
    """Check ``password``; with no hash (unknown user) spend the same time and answer False."""
    too_long = len(password) > MAX_PASSWORD_LENGTH
    if password_hash is None or too_long or not password_hash.startswith("$argon2"):
        # The same work as a real check, on a bounded input, then a refusal: no stored password
        # is longer than the maximum, so an over-long attempt can never be right.
        _hasher.verify(password[:MAX_PASSWORD_LENGTH], _dummy_hash())
        return False
    try:
        return bool(_hasher.verify(password, password_hash))
    except ValueError:
        return False


async def hash_password_async(password: str) -> str:
    """:func:`hash_password` on a worker thread."""
    return await anyio.to_thread.run_sync(hash_password, password, limiter=_argon2_slots)


async def verify_password_async(password: str, password_hash: str | None) -> bool:
    """:func:`verify_password` on a worker thread."""
    return await anyio.to_thread.run_sync(
        verify_password, password, password_hash, limiter=_argon2_slots
    )


@functools.cache
def _dummy_hash() -> str:
    return hash_password("not a password of anyone: keeps unknown names as slow as wrong passwords")


def check_strength(password: str, *, min_length: int, user_inputs: list[str]) -> None:
    """Refuse a new password that is short, over-long or guessable (zxcvbn score below 3)."""
    if len(password) < min_length:
        raise InvalidInput(f"Use at least {min_length} characters.", field="password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"Use at most {MAX_PASSWORD_LENGTH} characters.", field="password")
    result = zxcvbn.zxcvbn(
        password,
        user_inputs=[value for value in user_inputs if value],
        max_length=MAX_PASSWORD_LENGTH,  # its default of 72 raises on longer pass phrases
    )
    if result["score"] < 3:
        feedback = result["feedback"]
        hint = feedback.get("warning") or " ".join(feedback.get("suggestions", []))
        message = "This password is too easy to guess."
        raise InvalidInput(f"{message} {hint}".strip(), field="password")
