"""Prometheus metrics behind a token: ``GET /metrics`` with ``Authorization: Bearer <token>``.

No token configured (``monitoring.metrics_token``) means no endpoint: 404. A missing or wrong
token gets a bare 401; the comparison takes the same time whatever was sent. The body is the
text exposition format 0.0.4; a metric without a value (nothing measured, no backup yet) is
left out rather than given a made-up one.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping

from litestar import Controller, Response, get
from litestar.exceptions import NotFoundException

from appliance import __version__
from appliance.config import Settings
from appliance.monitoring.tables import Incident
from appliance.monitoring.uptime import OVERALL, WINDOWS, load_now, load_record
from appliance.tokens import same
from appliance.web.requests import AnyRequest

__all__ = ["CONTENT_TYPE", "Exposition", "MetricsController", "escape_label", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4"  # Litestar adds the charset
UP_VALUES = {"up": 1.0, "degraded": 0.5, "down": 0.0}  # "unknown" has no value


def escape_label(value: str) -> str:
    """A label value as the exposition format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Exposition:
    """Metric families in the order they are declared, each with HELP and TYPE once."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        help_text: str,
        samples: Iterable[tuple[Mapping[str, str], float | None]],
        kind: str = "gauge",
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if value is None or math.isnan(value):
                continue
            inner = ",".join(f'{key}="{escape_label(text)}"' for key, text in labels.items())
            self.lines.append(
                f"{name}{{{inner}}} {_number(value)}" if inner else f"{name} {_number(value)}"
            )

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _age(now: dt.datetime, moment: dt.datetime | None) -> float | None:
    return None if moment is None else max(0.0, (now - moment).total_seconds())


async def render_metrics(settings: Settings, now: dt.datetime) -> str:
    """The whole exposition: states, uptime ratios, incidents, outbox, backups, the worker."""
    current = await load_now(
        now,
        stale_seconds=settings.monitoring.worker_stale_seconds,
        round_seconds=settings.monitoring.probe_interval_seconds,
        latency=True,
    )
    record = await load_record(now, now - WINDOWS["90d"])
    counts = await Incident.raw(
        "SELECT 'incident' AS kind, '' AS state, count(*) AS n FROM service_incident"
        " WHERE resolved_at IS NULL"
        " UNION ALL SELECT kind, state, count(*) FROM outbox_message GROUP BY kind, state"
    )
    out = Exposition()
    out.family("appliance_info", "Version of the appliance.", [({"version": __version__}, 1)])
    out.family(
        "appliance_component_up",
        "Confirmed state: 1 up, 0.5 degraded, 0 down; absent while not checked lately.",
        [({"component": c.component}, UP_VALUES.get(c.state)) for c in current.components],
    )
    out.family(
        "appliance_component_state_since_timestamp_seconds",
        "When the component entered its current state (Unix time).",
        [
            ({"component": c.component}, c.since.timestamp() if c.since else None)
            for c in current.components
        ],
    )
    out.family(
        "appliance_probe_latency_seconds",
        "Duration of the newest probe of the component.",
        [
            ({"component": c.component}, None if c.latency_ms is None else c.latency_ms / 1000)
            for c in current.components
        ],
    )
    keys = [OVERALL, *dict.fromkeys([c.component for c in current.components] + record.with_spans)]
    out.family(
        "appliance_uptime_ratio",
        "Share of the measured time the component was up (announced maintenance counts as up).",
        [
            ({"component": key, "window": name}, figures.ratio)
            for key in keys
            for name, figures in record.windows(key).items()
        ],
    )
    out.family(
        "appliance_sla_target_ratio",
        "The availability target.",
        [({}, settings.monitoring.sla_target_percent / 100)],
    )
    out.family(
        "appliance_incidents_open",
        "Service incidents not resolved.",
        [({}, float(row["n"])) for row in counts if row["kind"] == "incident"],
    )
    out.family(
        "appliance_outbox_messages",
        "Messages in the outbox by kind and state.",
        [
            ({"kind": row["kind"], "state": row["state"]}, float(row["n"]))
            for row in counts
            if row["kind"] != "incident"
        ],
    )
    out.family(
        "appliance_last_verified_backup_age_seconds",
        "Age of the last backup that finished without fault.",
        [({}, _age(now, current.last_backup_at))],
    )
    out.family(
        "appliance_last_passed_drill_age_seconds",
        "Age of the last restore drill that passed.",
        [({}, _age(now, current.last_drill_at))],
    )
    out.family(
        "appliance_worker_heartbeat_age_seconds",
        "Age of the worker's last heartbeat.",
        [({}, _age(now, current.worker_beat_at))],
    )
    return out.text()


class MetricsController(Controller):
    path = "/metrics"

    @get("/", name="metrics", include_in_schema=False)
    async def metrics(self, request: AnyRequest) -> Response[str]:
        settings: Settings = request.app.state.settings
        token = settings.monitoring.metrics_token
        if not token:
            raise NotFoundException()
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Compared even when the scheme is wrong, so the answer takes the same time.
        matches = same(token, given.strip())
        if scheme.lower() != "bearer" or not matches:
            return Response(
                "Unauthorized\n",
                status_code=401,
                media_type="text/plain",
                headers={"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"},
            )
        body = await render_metrics(settings, request.app.state.clock())
        return Response(
            body,
            media_type=CONTENT_TYPE,
            headers={"Cache-Control": "no-store"},
        )
