"""Secrets stay out of the access log: token paths are masked and query strings dropped."""

from __future__ import annotations

import logging

import pytest

from appliance.logs import TokenRedactor, redact_path

ACCESS_FORMAT = '%s - "%s %s HTTP/%s" %d'


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/setup/?token=Zx81secret", "/setup/"),
        ("/login?next=%2Faccount", "/login"),
        ("/invite/k3y-T0ken_value", "/invite/[redacted]"),
        ("/invite/k3y-T0ken_value?utm=mail", "/invite/[redacted]"),
        ("/reset/AbCdEf123", "/reset/[redacted]"),
        ("/reset/AbCdEf123/extra", "/reset/[redacted]/extra"),
        ("/s/share-token", "/s/[redacted]"),
        ("/share/share-token", "/share/[redacted]"),
        ("/export/Xp0rt-t0ken_value", "/export/[redacted]"),
        ("/exports/12", "/exports/12"),  # a staff page: the id is no secret
    ],
)
def test_redact_path_masks_tokens_and_drops_query(path: str, logged: str) -> None:
    """Token path segments are masked and the query string is removed."""
    assert redact_path(path) == logged


@pytest.mark.parametrize(
    "path",
    ["/", "/login", "/account/two-factor", "/admin/users/invite", "/invitee/x", "/static/app.css"],
)
def test_redact_path_leaves_ordinary_paths_alone(path: str) -> None:
    """Paths without a token segment are logged as they are."""
    assert redact_path(path) == path


def test_redact_path_keeps_the_bare_prefix() -> None:
    """/invite/ with nothing after it has no token to mask."""
    assert redact_path("/invite/") == "/invite/"


def access_record(args: object) -> logging.LogRecord:
    return logging.LogRecord(
        name="uvicorn.access",
        level=logging.INFO,
        pathname=__file__,
        lineno=1,
        msg=ACCESS_FORMAT,
        args=args,  # type: ignore[arg-type]
        exc_info=None,
    )


def test_token_redactor_rewrites_uvicorn_access_record() -> None:
    """The redactor masks the path argument of an access-log record and keeps the record."""
    record = access_record(("203.0.113.5:50000", "GET", "/invite/T0k3n?x=1", "1.1", 200))
    assert TokenRedactor().filter(record) is True
    assert record.args == ("203.0.113.5:50000", "GET", "/invite/[redacted]", "1.1", 200)
    message = record.getMessage()
    assert "T0k3n" not in message
    assert message == '203.0.113.5:50000 - "GET /invite/[redacted] HTTP/1.1" 200'


def test_token_redactor_leaves_other_records_alone() -> None:
    """Records that are not shaped like an access line pass through unchanged."""
    record = logging.LogRecord(
        "appliance", logging.INFO, __file__, 1, "user %s signed in", ("olivia",), None
    )
    assert TokenRedactor().filter(record) is True
    assert record.args == ("olivia",)
    assert record.getMessage() == "user olivia signed in"
