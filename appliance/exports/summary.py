"""The readable part of an export (GDPR Art. 15(1) a-h): what the studio does with the data,
who receives it, how long it is kept, which rights the person has and how to use them.

Rendered to one self-contained HTML file: no scripts, styles or images from anywhere else, so
it opens offline from the unpacked archive.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import jinja2
import msgspec

from appliance.config import Settings
from appliance.exports.records import PersonKind

__all__ = ["Access", "Recipient", "SummaryFacts", "gather_facts", "render_summary"]

_TEMPLATES = Path(__file__).resolve().parent.parent / "web" / "templates" / "exports"
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
)


class Recipient(msgspec.Struct, frozen=True):
    purpose: str
    host: str


class Access(msgspec.Struct, frozen=True):
    """One access by staff to a client's data, from the audit log."""

    at: dt.datetime
    who: str
    action: str
    target: str


class SummaryFacts(msgspec.Struct, frozen=True):
    kind: PersonKind
    subject_id: int
    name: str
    studio: str
    contact_email: str
    generated_at: dt.datetime
    recipients: list[Recipient]
    recipients_note: str
    retention: list[tuple[str, str]]
    # What the archive holds, known once it is written (the summary is its last entry).
    tables: list[tuple[str, int]] = msgspec.field(default_factory=list)
    files: int = 0
    files_gone: int = 0  # listed in the records, deleted before they could be written
    accesses: list[Access] = msgspec.field(default_factory=list)  # the most recent ones
    accesses_total: int = 0


async def _recipients(settings: Settings) -> tuple[list[Recipient], str]:
    """The configured sub-processors, as the policy pages list them."""
    try:
        from appliance.policies.processors import list_processors
    except ImportError:  # an appliance built without the policy pages
        return [], "The studio's sub-processors are listed on its /privacy/processors page."
    found = await list_processors(settings)
    every = found.email + found.backups + found.storage + found.payments
    return [Recipient(purpose=p.purpose, host=p.host) for p in every], ""


def _retention(settings: Settings) -> list[tuple[str, str]]:
    backups = settings.backups
    privacy = settings.privacy
    return [
        (
            "Your records and files",
            "As long as you are a client or member of staff of the studio, or until you ask "
            f"for them to be erased: then they are gone within {privacy.erasure_grace_days} "
            "days, and at most 30 days after the request.",
        ),
        (
            "Encrypted backups",
            f"Daily for {backups.keep_daily} days, weekly for {backups.keep_weekly} weeks, "
            f"monthly for {backups.keep_monthly} months, and never longer than "
            f"{backups.max_age_days} days; an erased person is erased again after any restore.",
        ),
        (
            "This export",
            f"Deleted from the studio's server {privacy.export_link_hours} hours after it was "
            "made.",
        ),
        (
            "The audit log",
            "Who did what and when, kept as the studio's proof of how it handled data.",
        ),
    ]


async def gather_facts(
    settings: Settings,
    *,
    kind: PersonKind,
    subject_id: int,
    person: dict[str, Any],
    now: dt.datetime,
) -> SummaryFacts:
    """The facts of the summary but what the archive holds (``person`` is their own row)."""
    from appliance.setup.service import get_studio

    studio = await get_studio()
    name = str(person.get("name") or person.get("display_name") or "")
    recipients, note = await _recipients(settings)
    return SummaryFacts(
        kind=kind,
        subject_id=subject_id,
        name=name,
        studio=studio.name if studio else "the studio",
        contact_email=studio.contact_email if studio else "",
        generated_at=now,
        recipients=recipients,
        recipients_note=note,
        retention=_retention(settings),
    )


def render_summary(facts: SummaryFacts, manifest_name: str) -> bytes:
    context: dict[str, Any] = {"f": facts, "manifest_name": manifest_name}
    return _env.get_template("summary.html").render(context).encode()
