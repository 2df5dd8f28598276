"""Logging set-up for every entry point, with secrets kept out of the access log."""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = ["TokenRedactor", "configure_logging", "redact_path"]

# Path segments that are bearer secrets: invitation, reset, share-link and export-download
# tokens.
_TOKEN_PATH = re.compile(r"^(/(?:invite|reset|s|share|export)/)[^/?]+")


def redact_path(path: str) -> str:
    """Drop the query string (it may hold a setup token) and mask token path segments."""
    path = path.split("?", 1)[0]
    return _TOKEN_PATH.sub(r"\1[redacted]", path)


class TokenRedactor(logging.Filter):
    """Rewrites uvicorn's access-log record (client, method, path, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args: Any = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], redact_path(args[2]), args[3], args[4])
        return True


def configure_logging(level: str) -> dict[str, Any]:
    """Configure the root logger and return a uvicorn ``log_config`` with the redactor on."""
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": TokenRedactor}},
        "formatters": {"plain": {"format": fmt}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "plain"},
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "filters": ["redact"],
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            # One line per request to the S3 server (object keys, upload ids) is noise.
            "httpx": {"level": "WARNING"},
        },
    }
