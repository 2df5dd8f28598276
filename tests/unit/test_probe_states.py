"""Monitoring decisions without services: damping, changes, gaps, alerts, disks, certificates,
the components a form may name."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.errors import InvalidInput
from appliance.monitoring.components import clean_components
from appliance.monitoring.probes import cert_state, disk_outcome, not_after
from appliance.monitoring.states import (
    Status,
    Transition,
    alert_for,
    damp,
    dedupe_key,
    unwatched_gap,
)

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)


def feed(states: list[str], threshold: int) -> tuple[Status, list[tuple[str, str]]]:
    """Run results through damp, a minute apart; the final status and the changes."""
    status: Status | None = None
    changes: list[tuple[str, str]] = []
    for number, state in enumerate(states):
        status, change = damp(status, state, f"result {number}", T0 + number * MINUTE, threshold)  # type: ignore[arg-type]
        if change is not None:
            changes.append((change.previous, change.current))
    assert status is not None
    return status, changes


def test_first_up_result_confirms_nothing() -> None:
    """A component seen up for the first time starts up, with no change to announce."""
    status, changes = feed(["up"], threshold=2)
    assert (status.state, status.since, changes) == ("up", T0, [])


def test_down_is_confirmed_only_after_threshold_results_in_a_row() -> None:
    """One failed result is a candidate; the second in a row confirms the change once."""
    status, changes = feed(["up", "down"], threshold=2)
    assert status.state == "up"
    assert (status.candidate_state, status.candidate_count) == ("down", 1)
    status, changes = feed(["up", "down", "down", "down"], threshold=2)
    assert status.state == "down"
    assert changes == [("up", "down")]
    assert status.since == T0 + 2 * MINUTE
    assert status.candidate_count == 0


def test_a_single_blip_is_forgotten() -> None:
    """A failed result followed by a good one clears the candidate: no alert, no count."""
    status, changes = feed(["up", "down", "up", "down", "up"], threshold=2)
    assert changes == []
    assert (status.state, status.candidate_state, status.candidate_count) == ("up", "", 0)


def test_flapping_between_down_and_degraded_is_confirmed_as_the_worst() -> None:
    """After up, down and degraded results in a row count towards one candidate, the worst
    seen; once down is confirmed, down results hold it and degraded ones are a new candidate."""
    status, changes = feed(["up", "down", "degraded", "down", "degraded"], threshold=2)
    assert changes == [("up", "down")]
    assert (status.state, status.candidate_state, status.candidate_count) == ("down", "degraded", 1)
    status, changes = feed(["up", "degraded", "down"], threshold=2)
    assert (status.state, changes) == ("down", [("up", "down")])
    status, _ = feed(["up", "degraded"], threshold=3)
    assert (status.candidate_state, status.candidate_count) == ("degraded", 1)
    status, _ = feed(["up", "degraded", "down"], threshold=3)
    assert (status.candidate_state, status.candidate_count) == ("down", 2)
    status, changes = feed(["up", "degraded", "down", "degraded"], threshold=3)
    assert changes == [("up", "down")]


def test_a_worse_run_confirms_with_how_many_results_it_took() -> None:
    """The change carries the length of its run, which dates the span's start."""
    status: Status | None = None
    change = None
    for number, state in enumerate(["up", "degraded", "down", "degraded"]):
        status, change = damp(status, state, f"result {number}", T0 + number * MINUTE, 3)  # type: ignore[arg-type]
    assert change is not None
    assert (change.current, change.results) == ("down", 3)


def test_flapping_back_from_down_is_confirmed_degraded_not_up() -> None:
    """Coming back from down, up and degraded results count together and confirm degraded;
    up again takes threshold up results in a row."""
    states = ["down", "down", "up", "degraded", "up", "degraded"]
    status, changes = feed(states, threshold=2)
    assert changes == [("up", "down"), ("down", "degraded")]
    status, changes = feed([*states, "up", "degraded", "up"], threshold=2)
    assert changes == [("up", "down"), ("down", "degraded")]
    assert (status.state, status.candidate_state, status.candidate_count) == ("degraded", "up", 1)
    _, changes = feed([*states, "up", "up"], threshold=2)
    assert changes[-1] == ("degraded", "up")


def test_results_in_opposite_directions_start_counting_again() -> None:
    """Degraded, then down and up in turn: each result turns the other way, nothing is
    confirmed and the component stays degraded."""
    base = ["degraded", "degraded"]
    status, changes = feed([*base, "down", "up", "down", "up"], threshold=2)
    assert changes == [("up", "degraded")]
    assert (status.state, status.candidate_state, status.candidate_count) == ("degraded", "up", 1)


def test_recovery_and_partial_recovery_are_changes_of_their_own() -> None:
    """Down, then degraded, then up: three confirmed changes, in order."""
    _, changes = feed(["down"] * 2 + ["degraded"] * 2 + ["up"] * 2, threshold=2)
    assert changes == [("up", "down"), ("down", "degraded"), ("degraded", "up")]


def test_threshold_one_confirms_at_once() -> None:
    """With a threshold of 1 every different result is a change."""
    _, changes = feed(["down", "up"], threshold=1)
    assert changes == [("up", "down"), ("down", "up")]


def test_detail_follows_the_latest_result() -> None:
    """A confirmed state keeps its start but shows the newest detail."""
    status, _ = feed(["down", "down", "down"], threshold=2)
    assert status.detail == "result 2"
    assert status.since == T0 + MINUTE


def test_gap_needs_three_missed_rounds_and_a_loop_that_was_not_running() -> None:
    """Only a heartbeat older than three intervals, with no round of this loop since, is a gap."""
    now = T0 + 10 * MINUTE
    assert unwatched_gap(None, None, now, 60) is None
    assert unwatched_gap(now - 3 * MINUTE, None, now, 60) is None
    assert unwatched_gap(now - 4 * MINUTE, None, now, 60) == (now - 4 * MINUTE, now)
    # The loop ran a minute ago (the database was away): the loop was watching.
    assert unwatched_gap(now - 9 * MINUTE, now - MINUTE, now, 60) is None
    assert unwatched_gap(now - 9 * MINUTE, now - 5 * MINUTE, now, 60) == (now - 9 * MINUTE, now)


def test_alerts_say_what_changed_with_matching_severity() -> None:
    """Down is a failure, degraded a warning, up a success naming how long it lasted."""
    down = Transition("object-store", "up", "down", "photo storage failed: refused", T0)
    alert = alert_for(down, T0, T0 - dt.timedelta(days=3))
    assert (alert.title, alert.severity) == ("Photo storage is down", "failure")
    assert "refused" in alert.body and "2026-11-29 12:00 UTC" in alert.body
    degraded = Transition("disk:data", "up", "degraded", "5 % free", T0)
    assert alert_for(degraded, T0, T0).severity == "warning"
    up = Transition("offsite:nas", "down", "up", "last reached 0.1 h ago", T0 + 95 * MINUTE)
    alert = alert_for(up, T0 + 95 * MINUTE, T0)
    assert (alert.title, alert.severity) == ("Off-site copy (nas) is up again", "success")
    assert "1 h 35 min down" in alert.body


def test_dedupe_key_names_component_state_and_start() -> None:
    """Two changes of one component never share a key; the same change always does."""
    assert dedupe_key("web", "down", T0) == dedupe_key("web", "down", T0)
    assert dedupe_key("web", "down", T0) != dedupe_key("web", "down", T0 + MINUTE)
    assert dedupe_key("web", "down", T0) != dedupe_key("web", "up", T0)


def fake_statvfs(free_percent: float) -> Callable[[str], os.statvfs_result]:
    def statvfs(path: str) -> os.statvfs_result:
        blocks = 1_000_000
        free = int(blocks * free_percent / 100)
        return os.statvfs_result((4096, 4096, blocks, free, free, 100, 50, 50, 0, 255))

    return statvfs


@pytest.mark.parametrize(
    ("free", "state"), [(50, "up"), (10.5, "up"), (9.9, "degraded"), (3, "degraded"), (2.9, "down")]
)
def test_disk_thresholds(free: float, state: str, tmp_path: Path) -> None:
    """Below disk_warn_percent is degraded, below disk_down_percent down."""
    outcome = disk_outcome(str(tmp_path), fake_statvfs(free), 10, 3)
    assert outcome.state == state
    assert "GB free of 4.1 GB" in outcome.detail


def test_disk_of_a_missing_folder_is_its_parents(tmp_path: Path) -> None:
    """A repository folder not made yet is judged by the file system it will be made on."""
    seen = []

    def statvfs(path: str) -> os.statvfs_result:
        seen.append(path)
        return fake_statvfs(50)(path)

    assert disk_outcome(str(tmp_path / "not-here" / "repo"), statvfs, 10, 3).state == "up"
    assert seen == [str(tmp_path)]


def test_certificate_states() -> None:
    """Expired is down, near expiry degraded, another host name degraded, an unknown CA fine."""
    assert cert_state(T0 - MINUTE, T0, 14).state == "down"
    assert cert_state(T0 + dt.timedelta(days=13), T0, 14).state == "degraded"
    assert cert_state(T0 + dt.timedelta(days=60), T0, 14).state == "up"
    assert cert_state(T0 + dt.timedelta(days=60), T0, 14, "hostname").state == "degraded"
    lan = cert_state(T0 + dt.timedelta(days=60), T0, 14, "authority")
    assert lan.state == "up" and "does not trust" in lan.detail


@pytest.mark.parametrize("year", [2027, 2051])
def test_not_after_is_read_from_der(year: int) -> None:
    """The expiry is read from the certificate itself, as UTCTime and as GeneralizedTime."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "appliance.test")])
    expires = dt.datetime(year, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0)
        .not_valid_after(expires)
        .sign(key, hashes.SHA256())
    )
    assert not_after(cert.public_bytes(serialization.Encoding.DER)) == expires


def test_not_after_refuses_garbage() -> None:
    """Bytes that are no certificate raise ValueError or IndexError, which the probe reports."""
    with pytest.raises((ValueError, IndexError)):
        not_after(b"\x30\x82\xff\xff")


def test_components_ticked_on_a_form_are_trimmed_once_each_and_forged_ones_refused() -> None:
    """Blank entries go, repeats count once in the order given; a key not offered is refused
    with a message that names it (cut short)."""
    known = ["web", "database", "offsite:nas"]
    assert clean_components([" database", "", "web", "database ", "  "], known) == [
        "database",
        "web",
    ]
    assert clean_components([], known) == []
    with pytest.raises(InvalidInput, match="Unknown component: 'toaster'") as refused:
        clean_components(["web", "toaster"], known)
    assert refused.value.field == "components"
    with pytest.raises(InvalidInput) as long:
        clean_components(["x" * 500], known)
    assert "x" * 65 not in str(long.value)
