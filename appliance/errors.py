"""Domain errors raised by services; the web layer maps each to one HTTP status."""

from __future__ import annotations

__all__ = [
    "ApplianceError",
    "Conflict",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "TooManyAttempts",
    "Unauthenticated",
]


class ApplianceError(Exception):
    """Base of every error a service raises on purpose; ``message`` is safe to show a person."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(ApplianceError):
    """The request carried a value that cannot be accepted (names the field when there is one)."""


class Unauthenticated(ApplianceError):
    """The credentials were wrong, or no session exists."""


class Forbidden(ApplianceError):
    """The actor may not do this."""


class NotFound(ApplianceError):
    """The thing does not exist, or the actor may not know that it does."""


class Conflict(ApplianceError):
    """The thing is in a state that does not allow this (used token, finished wizard...)."""


class TooManyAttempts(ApplianceError):
    """Throttled; ``retry_after`` says how many seconds to wait."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
