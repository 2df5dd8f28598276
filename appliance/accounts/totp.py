"""TOTP (RFC 6238) secrets, QR codes and code checking with replay detection by time step."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

import pyotp
import segno

from appliance.tokens import same

__all__ = ["matching_step", "new_secret", "normalise_code", "provisioning_uri", "qr_data_uri"]

STEP_SECONDS = 30
_CODE = re.compile(r"^[0-9]{6}$")


def new_secret() -> str:
    """160 random bits in base32, the size RFC 4226 recommends."""
    return pyotp.random_base32(length=32)


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def qr_data_uri(uri: str) -> str:
    """The QR code as an SVG ``data:`` URI (no script, no external asset; allowed by our CSP)."""
    # svg_data_uri keeps the xmlns attribute; without it browsers refuse to draw the image.
    return str(segno.make(uri, error="m").svg_data_uri(scale=5, dark="#111", light="#fff"))


def normalise_code(code: str) -> str | None:
    """Six ASCII digits, spaces removed; None when it cannot be a TOTP code.

    NFKC turns full-width digits (as typed with East Asian input methods) into ASCII ones.
    """
    cleaned = unicodedata.normalize("NFKC", code).replace(" ", "").strip()
    return cleaned if _CODE.fullmatch(cleaned) else None


def matching_step(secret: str, code: str, now: dt.datetime, *, window: int = 1) -> int | None:
    """The time step whose code equals ``code`` (within ±window steps of now), or None.

    The caller accepts the code only if this step is later than the last one used.
    """
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // STEP_SECONDS
    found = None
    for step in range(current - window, current + window + 1):
        # Compare every candidate (no early exit) so timing says nothing about which matched.
        if same(totp.generate_otp(step), code):
            found = step
    return found
