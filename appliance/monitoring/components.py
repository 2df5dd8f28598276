"""The components the probes watch, the names people see, and how the status page groups them.

Component keys are stored in probe results, states and spans; off-site repositories add one
key each (``offsite:<repository name>``), so the set is open and a key outside the table below
still gets a readable label.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Literal

from appliance.errors import InvalidInput

__all__ = [
    "CORE",
    "GROUPS",
    "LABELS",
    "SpanState",
    "State",
    "clean_components",
    "group_of",
    "label",
    "reported_elsewhere",
]

State = Literal["up", "degraded", "down"]
SpanState = Literal["degraded", "down", "unknown"]

LABELS = {
    "web": "Website and galleries",
    "database": "Database",
    "object-store": "Photo storage",
    "worker": "Background worker",
    "queue": "Job queue",
    "disk:data": "Disk space (data)",
    "disk:backup": "Disk space (backups)",
    "tls": "TLS certificate",
    "backup": "Daily backup",
    "drill": "Restore drill",
}

# The components without which clients cannot open their galleries: the overall uptime is down
# whenever one of them is.
CORE = ("web", "database", "object-store")

# Status page sections, in order.
GROUPS: dict[str, tuple[str, ...]] = {
    "Galleries and website": ("web", "database", "object-store"),
    "Background work": ("worker", "queue"),
    "Storage": ("disk:data", "disk:backup"),
    "Backups": ("backup", "drill", "offsite:"),
    "Security": ("tls",),
}


# Components whose own domain alerts, with the reason and daily reminders (the backups domain):
# the probes keep their state, uptime and status-page entry, but raise no alert or incident of
# their own, so one failed backup is one message, not two. They do not stop clients either.
_REPORTED_ELSEWHERE = ("backup", "drill", "offsite:")


def _among(component: str, members: tuple[str, ...]) -> bool:
    """Whether ``component`` is one of ``members``; a member ending in ":" names a family."""
    return any(component == m or (m.endswith(":") and component.startswith(m)) for m in members)


def reported_elsewhere(component: str) -> bool:
    return _among(component, _REPORTED_ELSEWHERE)


def label(component: str) -> str:
    if component.startswith("offsite:"):
        return f"Off-site copy ({component.partition(':')[2]})"
    return LABELS.get(component, component)


def clean_components(chosen: Iterable[str], known: Collection[str]) -> list[str]:
    """The components ticked on a form, trimmed, once each, in the order given; a key that is
    not in ``known`` (a forged form) is refused."""
    picked = list(dict.fromkeys(item.strip() for item in chosen if item.strip()))
    unknown = [item for item in picked if item not in known]
    if unknown:
        raise InvalidInput(
            f"Unknown component: {unknown[0][:64]!r}. Choose from the list.", field="components"
        )
    return picked


def group_of(component: str) -> str:
    for group, members in GROUPS.items():
        if _among(component, members):
            return group
    return "Other"
