"""TOTP codes match an independent RFC 6238 computation within one step either way."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import struct

import pytest

from appliance.accounts.totp import matching_step, new_secret, normalise_code

SECRET = base64.b32encode(b"unit-test-totp-key!!").decode()  # 20 bytes, 160 bits
NOW = dt.datetime(2026, 3, 14, 15, 9, 26, tzinfo=dt.UTC)
STEP = int(NOW.timestamp()) // 30


def rfc6238(secret_b32: str, step: int, digits: int = 6) -> str:
    """HOTP(K, T) per RFC 4226 section 5.3 with SHA-1, T the 30-second step."""
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def wrong_code() -> str:
    """A six-digit code that matches none of the steps around NOW."""
    nearby = {rfc6238(SECRET, step) for step in range(STEP - 3, STEP + 4)}
    return next(code for code in (f"{n:06d}" for n in range(1_000_000)) if code not in nearby)


def test_reference_implementation_matches_rfc_6238_vector() -> None:
    """The reference gives 94287082 for the RFC 6238 SHA-1 secret at T=59."""
    secret = base64.b32encode(b"12345678901234567890").decode()
    assert rfc6238(secret, 59 // 30, digits=8) == "94287082"
    assert rfc6238(secret, 59 // 30) == "287082"


def test_rfc_6238_vector_is_accepted_at_its_step() -> None:
    """The six-digit RFC 6238 code 287082 matches step 1 at time 59."""
    secret = base64.b32encode(b"12345678901234567890").decode()
    now = dt.datetime.fromtimestamp(59, tz=dt.UTC)
    assert matching_step(secret, "287082", now) == 1


def test_codes_around_now_are_distinct() -> None:
    """The fixture secret gives different codes for the steps the checks below rely on."""
    codes = [rfc6238(SECRET, step) for step in range(STEP - 2, STEP + 3)]
    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_code_within_one_step_returns_its_step(offset: int) -> None:
    """Codes of the previous, current and next step match and report that step."""
    assert matching_step(SECRET, rfc6238(SECRET, STEP + offset), NOW) == STEP + offset


@pytest.mark.parametrize("offset", [-2, 2])
def test_code_two_steps_away_is_refused(offset: int) -> None:
    """A code from two steps before or after now does not match."""
    assert matching_step(SECRET, rfc6238(SECRET, STEP + offset), NOW) is None


def test_wrong_code_is_refused() -> None:
    """A code that belongs to no nearby step does not match."""
    assert matching_step(SECRET, wrong_code(), NOW) is None


def test_window_zero_accepts_only_the_current_step() -> None:
    """With window=0 only the current step's code matches."""
    assert matching_step(SECRET, rfc6238(SECRET, STEP), NOW, window=0) == STEP
    assert matching_step(SECRET, rfc6238(SECRET, STEP - 1), NOW, window=0) is None


def test_step_boundary_moves_the_current_step() -> None:
    """At the first second of a step the previous step is still accepted, two back is not."""
    boundary = dt.datetime.fromtimestamp((STEP + 1) * 30, tz=dt.UTC)
    assert matching_step(SECRET, rfc6238(SECRET, STEP), boundary) == STEP
    assert matching_step(SECRET, rfc6238(SECRET, STEP - 1), boundary) is None


def test_new_secret_is_160_bits_of_base32() -> None:
    """new_secret gives 32 base32 characters (20 bytes), different each time."""
    first, second = new_secret(), new_secret()
    assert len(first) == 32
    assert len(base64.b32decode(first)) == 20
    assert first != second


@pytest.mark.parametrize(
    ("typed", "code"),
    [("123456", "123456"), ("123 456", "123456"), (" 123456 ", "123456"), ("000000", "000000")],
)
def test_normalise_code_accepts_six_digits_with_spaces(typed: str, code: str) -> None:
    """Six digits, with spaces anywhere, become the bare code."""
    assert normalise_code(typed) == code


@pytest.mark.parametrize(
    "typed", ["12345", "1234567", "abcdef", "12345a", "", "123-456", "123456\n7", "12 34 5"]
)
def test_normalise_code_refuses_what_cannot_be_a_code(typed: str) -> None:
    """Too few or too many digits, letters and punctuation give None."""
    assert normalise_code(typed) is None


@pytest.mark.parametrize("zero", [0xFF10, 0x0660], ids=["fullwidth", "arabic-indic"])
def test_non_ascii_digits_never_reach_the_comparison(zero: int) -> None:
    """Digits from other scripts are either refused or turned into ASCII before checking."""
    code = rfc6238(SECRET, STEP)
    typed = "".join(chr(zero + int(digit)) for digit in code)
    digits = normalise_code(typed)
    assert digits is None or digits == code
    if digits is not None:
        assert matching_step(SECRET, digits, NOW) == STEP
