"""Piccolo tables of the backups domain.

restic repositories are the truth about what is stored; these tables remember what the
appliance did (jobs, recovery points seen in each repository, drills, sizes over time) so the
admin page and the alerts never have to ask a remote repository.
"""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    BigInt,
    Boolean,
    Integer,
    Real,
    Serial,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table

__all__ = [
    "BackupAlert",
    "BackupJob",
    "BackupSetting",
    "DrillReport",
    "RecoveryPointCopy",
    "RepositorySample",
]


class BackupJob(Table, tablename="backup_job"):
    """One unit of backup work; the database is the queue, so a job outlives its worker.

    ``slot`` names what the job is for ("backup:2026-11-29", "check:primary:2026-11-29") and is
    unique, so a schedule seen twice, or by two workers, queues the job once.
    """

    id: Serial  # added by Piccolo; declared for the type checker
    kind = Varchar(length=16)  # "backup", "copy", "check", "prune", "drill", "watch"
    repository = Varchar(length=64, default="")
    slot = Varchar(length=160, unique=True)
    state = Varchar(length=16, default="queued", index=True)  # queued, running, done, failed
    attempts = Integer(default=0)
    not_before = Timestamptz()
    claimed_by = Varchar(length=80, default="")
    claimed_at = Timestamptz(null=True, default=None)
    heartbeat_at = Timestamptz(null=True, default=None)
    finished_at = Timestamptz(null=True, default=None)
    requested_by = Integer(null=True, default=None)  # a staff member, for on-demand runs
    error = Text(default="")
    result = JSONB(default="{}")
    created_at = Timestamptz()


class RecoveryPointCopy(Table, tablename="recovery_point_copy"):
    """A recovery point as stored in one repository: its two restic snapshots."""

    point_id = Varchar(length=40, index=True)
    repository = Varchar(length=64)
    copy_key = Varchar(length=120, unique=True)  # "<point id>@<repository>"
    taken_at = Timestamptz()
    db_snapshot = Varchar(length=64)
    files_snapshot = Varchar(length=64)
    object_count = Integer(default=0)
    object_bytes = BigInt(default=0)
    seen_at = Timestamptz()


class DrillReport(Table, tablename="backup_drill"):
    """The evidence of one restore drill; ``report`` is the JSON kept beside it on disk."""

    repository = Varchar(length=64)
    point_id = Varchar(length=40, default="")
    started_at = Timestamptz()
    finished_at = Timestamptz()
    passed = Boolean(default=False)
    rto_seconds = Real(default=0.0)
    rpo_seconds = Real(default=0.0)
    report = JSONB(default="{}")


class RepositorySample(Table, tablename="backup_repository_sample"):
    """A repository's size at one moment, for the chart on the admin page."""

    repository = Varchar(length=64, index=True)
    at = Timestamptz()
    stored_bytes = BigInt()
    snapshots = Integer()


class BackupAlert(Table, tablename="backup_alert"):
    """Whether a check ("backup", "copy:offsite", "drill", ...) is failing, so that only the
    change from working to failing and back sends a message."""

    key = Varchar(length=80, unique=True)
    failing = Boolean(default=False)
    since = Timestamptz()
    message = Text(default="")
    notified_at = Timestamptz(null=True, default=None)


class BackupSetting(Table, tablename="backup_setting"):
    """What admins change on the backups page: alert URLs, the ping URL, repositories added
    there, and the moment the repository password was confirmed as stored."""

    key = Varchar(length=64, unique=True)
    value = JSONB(default="null")
    updated_at = Timestamptz()
    updated_by = Integer(null=True, default=None)
