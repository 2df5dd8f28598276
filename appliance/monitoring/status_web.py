"""The public status page: the overall state, each component with its 90-day bars, current
incidents, maintenance, and when the last backup was verified.

It shows labels, states and figures only: no probe detail, host name, path or address, and
incident updates written by the appliance itself are replaced by fixed texts, because they
carry the probe's detail. Who may open it is ``monitoring.status_page``; anyone else gets the
same 404 as for a page that does not exist. One rendering is kept for a few seconds, so a
crowd of visitors costs the database one round of queries.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

import msgspec
from litestar import Controller, get
from litestar.exceptions import NotFoundException
from litestar.response import Template

from appliance.config import Settings
from appliance.monitoring import components
from appliance.monitoring.incidents import IncidentRecord, current_incidents
from appliance.monitoring.maintenance import Maintenance, upcoming_maintenance
from appliance.monitoring.svg import percent, uptime_bars
from appliance.monitoring.uptime import (
    OVERALL,
    WINDOWS,
    ComponentNow,
    Now,
    Record,
    load_now,
    load_record,
)
from appliance.setup import service as setup
from appliance.web.pages import client_address
from appliance.web.requests import AnyRequest
from appliance.web.security import FORWARDED_BY_TRUSTED_PROXY

__all__ = [
    "LAN_NETWORKS",
    "STATE_WORDS",
    "ActiveWindow",
    "ComponentRow",
    "StatusController",
    "active_windows",
    "banner",
    "component_rows",
    "lan_address",
    "public_updates",
    "status_context",
    "visible_to",
]

# "lan": loopback, private and link-local addresses, as the app sees the client behind its
# trusted proxies. Written out rather than ``is_private``, which also admits documentation
# and reserved ranges.
LAN_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)
# Headers a reverse proxy sets for the client it forwards.
FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
CACHE_SECONDS = 10
SHOWN_WINDOWS = ("24h", "30d", "90d")
BANNERS = {
    "operational": "All systems operational",
    "degraded": "Some parts are degraded",
    "outage": "Outage: galleries may be unavailable",
    "maintenance": "Maintenance in progress",
    "unknown": "Status not known yet",
}
STATE_WORDS = {
    "up": "Operational",
    "degraded": "Degraded",
    "down": "Down",
    "unknown": "Not checked",
    "maintenance": "Maintenance",
}
# What the status page says for updates the appliance wrote itself.
AUTOMATIC_TEXTS = {
    "investigating": "Detected automatically. We are looking into it.",
    "identified": "The cause has been found. A fix is under way.",
    "monitoring": "A fix is in place. We are watching the results.",
    "resolved": "This is working again.",
}


def visible_to(setting: str, address: str) -> bool:
    """Whether a client at ``address`` may see the status page under ``setting``."""
    if setting == "public":
        return True
    if setting != "lan":
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in LAN_NETWORKS)


def lan_address(address: str, headers: Any, trusted_proxy_named_it: bool) -> str:
    """The visitor's address as the "lan" rule may judge it; "" when it cannot be trusted.

    ``address`` is the client as the app sees it: the one a trusted proxy forwarded, else the
    peer. A request that carries forwarding headers which no trusted proxy resolved came
    through a proxy missing from ``server.trusted_proxies``: its peer (127.0.0.1, a Docker
    address) is that proxy, the same for every visitor, so it fails closed.
    """
    if not any(name in headers for name in FORWARDING_HEADERS):
        return address
    return address if trusted_proxy_named_it else ""


class ComponentRow(msgspec.Struct, frozen=True, kw_only=True):
    component: str
    label: str
    group: str
    state: str
    since: dt.datetime | None
    figures: dict[str, str]  # window name -> "99.95%"
    bars: str  # SVG markup (``Markup``, so the template does not escape it)
    summary: str  # the bars in words
    detail: str = ""


class ActiveWindow(msgspec.Struct, frozen=True):
    title: str
    end: dt.datetime
    components: list[str]

    @property
    def labels(self) -> list[str]:
        return [components.label(component) for component in self.components]


def _covered(component: str, windows: list[ActiveWindow]) -> bool:
    return any(not w.components or component in w.components for w in windows)


def active_windows(record: Record) -> list[ActiveWindow]:
    """The announced windows running at ``record.now``."""
    return [
        ActiveWindow(m.title, m.end, list(m.components))
        for m in record.maintenance
        if m.start <= record.now < m.end
    ]


def banner(now_states: Now, windows: list[ActiveWindow]) -> str:
    """One of :data:`BANNERS`: an outage of a core component not under maintenance wins, then
    running maintenance, then anything not up."""
    states = {c.component: c.state for c in now_states.components}
    if not states:
        return "unknown"
    if any(states.get(c) == "down" and not _covered(c, windows) for c in components.CORE):
        return "outage"
    if windows:
        return "maintenance"
    if any(state in {"down", "degraded"} for state in states.values()):
        return "degraded"
    if all(state == "unknown" for state in states.values()):
        return "unknown"
    return "operational"


def _summary(label: str, record: Record, component: str) -> tuple[str, str]:
    days = record.days(component)
    ninety = record.uptime(component, record.now - WINDOWS["90d"], record.now)
    down_days = sum(1 for day in days if day.state == "down")
    unknown_days = sum(1 for day in days if day.state == "unknown")
    words = f"90 days: {percent(ninety)} up"
    if down_days:
        words += f", {down_days} day{'s' if down_days != 1 else ''} with downtime"
    if unknown_days:
        words += f", {unknown_days} day{'s' if unknown_days != 1 else ''} without data"
    return uptime_bars(days, f"Uptime of {label} over the last 90 days"), words


def component_rows(
    record: Record, now_states: Now, *, with_detail: bool = False
) -> list[ComponentRow]:
    """Overall first, then each component known to the states or the record."""
    windows = active_windows(record)
    current = {c.component: c for c in now_states.components}
    keys = list(current) + [k for k in record.with_spans if k not in current]
    rows = []
    overall_state = banner(now_states, windows)
    for key in [OVERALL, *keys]:
        state_now: ComponentNow | None = current.get(key)
        if key == OVERALL:
            label, group = "Overall", ""
            state = {"operational": "up", "outage": "down"}.get(overall_state, overall_state)
            since = None
        else:
            label, group = components.label(key), components.group_of(key)
            state = state_now.state if state_now else "unknown"
            since = state_now.since if state_now else None
            if state == "down" and _covered(key, windows):
                state = "maintenance"
        bars, words = _summary(label, record, key)
        figures = record.windows(key)
        rows.append(
            ComponentRow(
                component=key,
                label=label,
                group=group,
                state=state if state in STATE_WORDS else "unknown",
                since=since,
                figures={name: percent(figures[name], 2) for name in WINDOWS},
                bars=bars,
                summary=words,
                detail=state_now.detail if (with_detail and state_now) else "",
            )
        )
    return rows


def public_updates(incident: IncidentRecord) -> list[dict[str, Any]]:
    """An incident's updates as the public sees them: the appliance's own words replaced."""
    return [
        {
            "state": update.state,
            "created_at": update.created_at,
            "message": update.message
            if update.created_by is not None
            else AUTOMATIC_TEXTS.get(update.state, ""),
        }
        for update in incident.updates
    ]


def _grouped(rows: list[ComponentRow]) -> list[tuple[str, list[ComponentRow]]]:
    order = [*components.GROUPS, "Other"]
    groups: dict[str, list[ComponentRow]] = {}
    for row in rows:
        if row.component != OVERALL:
            groups.setdefault(row.group, []).append(row)
    return [(name, groups[name]) for name in order if name in groups]


async def status_context(settings: Settings, now: dt.datetime) -> dict[str, Any]:
    """Everything the page shows, from eight queries."""
    record = await load_record(now, now - WINDOWS["90d"] - dt.timedelta(days=1))
    now_states = await load_now(
        now,
        stale_seconds=settings.monitoring.worker_stale_seconds,
        round_seconds=settings.monitoring.probe_interval_seconds,
    )
    rows = component_rows(record, now_states)
    windows = active_windows(record)
    incidents = await current_incidents(now)
    upcoming: list[Maintenance] = await upcoming_maintenance(now)
    studio = await setup.get_studio()
    return {
        "now": now,
        "studio": studio.name if studio else "",
        "banner": banner(now_states, windows),
        "banners": BANNERS,
        "state_words": STATE_WORDS,
        "overall": rows[0],
        "groups": _grouped(rows),
        "shown_windows": SHOWN_WINDOWS,
        "active": windows,
        "incidents": [(incident, public_updates(incident)) for incident in incidents],
        "upcoming": upcoming,
        "last_backup_at": now_states.last_backup_at,
        "last_drill_at": now_states.last_drill_at,
        "target": settings.monitoring.sla_target_percent,
    }


class StatusController(Controller):
    path = "/status"

    @get("/", name="status_page", include_in_schema=False)
    async def page(self, request: AnyRequest) -> Template:
        settings: Settings = request.app.state.settings
        setting = settings.monitoring.status_page
        address = lan_address(
            client_address(request),
            request.headers,
            bool(request.scope.get("state", {}).get(FORWARDED_BY_TRUSTED_PROXY)),
        )
        if not visible_to(setting, address):
            raise NotFoundException()
        now: dt.datetime = request.app.state.clock()
        cached = request.app.state.get("status_page_cache")
        if cached and dt.timedelta(0) <= now - cached[0] < dt.timedelta(seconds=CACHE_SECONDS):
            context = cached[1]
        else:
            context = await status_context(settings, now)
            request.app.state["status_page_cache"] = (now, context)
        scope = "public" if setting == "public" else "private"
        return Template(
            template_name="monitoring/status.html",
            context=context,
            headers={"Cache-Control": f"{scope}, max-age={CACHE_SECONDS}"},
        )
