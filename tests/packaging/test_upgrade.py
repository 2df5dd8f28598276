"""installer/upgrade.sh against the stand-in ``docker``: the gate, the steps in their order,
the rollback to the previous image, compose files and database, interruptions and the lock."""

from __future__ import annotations

import fcntl
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.packaging.conftest import Bench, internet_flags

GATE = "exec worker appliance upgrade-check"
BACKUP = "exec worker appliance backup"
CHECK = "run migrate check-config"
DUMP = "exec postgres pg_dump appliance appliance"
RESTORE = [
    "exec postgres dropdb appliance appliance",
    "exec postgres createdb appliance appliance appliance",
    "exec postgres pg_restore appliance appliance",
]


@pytest.fixture
def installed(bench: Bench) -> Bench:
    """Version 0.1.0 installed and running; the log starts after the install."""
    result = bench.install(*internet_flags())
    assert result.returncode == 0, result.stderr
    bench.forget_calls()
    return bench


def upgrade(bench: Bench, *extra: str, version: str = "0.2.0") -> tuple[int, str]:
    result = bench.run(
        "upgrade.sh", "--dir", str(bench.install_dir), "--wait", "2", *extra, version=version
    )
    return result.returncode, result.stdout + result.stderr


def leftovers(bench: Bench) -> list[str]:
    """What an upgrade leaves in the install folder besides the dumps and the lock."""
    names = [".env.previous", "compose.previous", "upgrade/state"]
    return [name for name in names if (bench.install_dir / name).exists()]


def version_in_env(bench: Bench) -> str:
    for line in (bench.install_dir / ".env").read_text().splitlines():
        if line.startswith("APPLIANCE_VERSION="):
            return line.partition("=")[2]
    raise AssertionError("no APPLIANCE_VERSION in .env")


def test_a_failing_upgrade_check_refuses_and_changes_nothing(installed: Bench) -> None:
    """Exit 3 with the gate's reasons; no backup, dump, build or switch happens."""
    installed.configure(fail=["upgrade-check"])
    env_before = (installed.install_dir / ".env").read_bytes()
    code, output = upgrade(installed)
    assert code == 3
    assert "the last restore drill failed" in output
    assert "--force" in output
    assert installed.compose_commands() == [GATE]
    assert (installed.install_dir / ".env").read_bytes() == env_before
    assert sorted(p.name for p in (installed.install_dir / "upgrade").iterdir()) == ["lock"]


def test_force_upgrades_past_a_failing_gate(installed: Bench) -> None:
    """--force warns about the gate and upgrades."""
    installed.configure(fail=["upgrade-check"])
    code, output = upgrade(installed, "--force")
    assert code == 0, output
    assert "upgrading anyway (--force)" in output
    assert version_in_env(installed) == "0.2.0"


def test_an_upgrade_builds_and_checks_while_serving_then_stops_dumps_and_switches(
    installed: Bench,
) -> None:
    """The success path: gate, recovery point, the new image and its verdict on config.toml
    while the old version serves; then web and worker stop before the dump, so no write is
    lost; then the new compose files and .env, migrations, start, health. The dump is kept and
    private, and no copy for a rollback is left behind."""
    env_before = (installed.install_dir / ".env").read_text()
    code, output = upgrade(installed)
    assert code == 0, output
    assert "Upgraded from 0.1.0 to 0.2.0" in output
    commands = installed.compose_commands()
    assert commands[:8] == [
        GATE,
        BACKUP,
        "build",
        CHECK,
        "stop web worker",
        DUMP,
        "run migrate",
        "up",
    ]
    assert all(c.startswith("ps") for c in commands[8:])
    build = next(c for c in installed.calls() if "build" in c["argv"])
    assert build["version"] == "0.2.0"
    # config.toml is judged by the new image, through the release's compose file.
    check = next(c for c in installed.calls() if "check-config" in c["argv"])
    assert check["version"] == "0.2.0"
    files = [check["argv"][i + 1] for i, a in enumerate(check["argv"]) if a == "--file"]
    assert files == [str(installed.releases["0.2.0"] / "compose" / "docker-compose.yml")]
    assert leftovers(installed) == []
    migrate = next(c for c in installed.calls() if c["argv"][-2:] == ["-T", "migrate"])
    assert migrate["env_file_values"]["APPLIANCE_VERSION"] == "0.2.0"
    # .env: only the version changed; the compose files are the new release's.
    assert (installed.install_dir / ".env").read_text() == env_before.replace(
        "APPLIANCE_VERSION=0.1.0", "APPLIANCE_VERSION=0.2.0"
    )
    assert (installed.install_dir / ".env").stat().st_mode & 0o777 == 0o600
    compose = (installed.install_dir / "compose" / "docker-compose.yml").read_text()
    assert compose.startswith("# the bundle of release 0.2.0")
    [dump] = (installed.install_dir / "upgrade").glob("*.dump")
    assert dump.name.startswith("fotostudio-0.1.0-") and dump.suffix == ".dump"
    assert dump.read_text() == "PGDMP\nschema of 0.1.0\n"
    assert dump.stat().st_mode & 0o077 == 0
    state = installed.state()
    assert state["running"] == "0.2.0"
    assert state["database"] == "schema of 0.2.0"
    assert all(call["stdin_bytes"] == 0 for call in installed.calls())


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        ({"unhealthy": ["0.2.0"]}, "the new services were not healthy within 2 s"),
        ({"fail": ["migrate"]}, "the migrations failed"),
    ],
    ids=["unhealthy", "migrations-fail"],
)
def test_a_failed_switch_rolls_back_image_compose_files_and_database(
    installed: Bench, answers: dict[str, list[str]], reason: str
) -> None:
    """After the switch fails, the previous tag comes back in .env, the previous compose files,
    the database from the dump (fed through stdin), and the previous services; exit 4."""
    installed.configure(**answers)
    env_before = (installed.install_dir / ".env").read_bytes()
    code, output = upgrade(installed)
    assert code == 4, output
    assert reason in output
    assert "rolled back to 0.1.0" in output
    assert (installed.install_dir / ".env").read_bytes() == env_before
    compose = (installed.install_dir / "compose" / "docker-compose.yml").read_text()
    assert compose.startswith("# the bundle of release 0.1.0")
    commands = installed.compose_commands()
    switched = commands.index("stop web worker")
    rollback = commands.index("stop web worker", switched + 1)
    # The previous PostgreSQL first, alone and healthy, then the dump, then the rest.
    steps = [c for c in commands[rollback:] if not c.startswith("ps")]
    assert steps == ["stop web worker", "up postgres", *RESTORE, "up"]
    assert commands[commands.index("up postgres") + 1].startswith("ps")
    postgres_up = next(c for c in installed.calls() if c["argv"][-1] == "postgres")
    assert postgres_up["version"] == "0.1.0"
    restore = next(c for c in installed.calls() if "pg_restore" in c["argv"])
    [dump] = (installed.install_dir / "upgrade").glob("*.dump")
    assert restore["stdin_bytes"] == dump.stat().st_size > 0
    assert leftovers(installed) == []
    last_up = [c for c in installed.calls() if c["argv"][-3:] == ["up", "-d", "--remove-orphans"]][
        -1
    ]
    assert last_up["version"] == "0.1.0"
    state = installed.state()
    assert (state["running"], state["database"]) == ("0.1.0", "schema of 0.1.0")


def test_a_failing_rollback_says_so_and_a_second_run_finishes_it(installed: Bench) -> None:
    """When the database cannot be restored either, exit 5 names what failed and the dump,
    the old web and worker stay stopped, and the state file stays; once the cause is gone, a
    second run finishes the rollback and says so."""
    installed.configure(unhealthy=["0.2.0"], fail=["pg_restore"])
    code, output = upgrade(installed)
    assert code == 5, output
    assert "the rollback failed too: restoring the database from" in output
    assert "docs/upgrade.md" in output
    assert installed.state()["stopped"] == ["web", "worker"]
    assert "phase=starting" in (installed.install_dir / "upgrade" / "state").read_text()
    installed.configure(fail=[])
    code, output = upgrade(installed)
    assert code == 4, output
    assert "an earlier upgrade from 0.1.0 to 0.2.0 did not finish (it got to: starting)" in output
    state = installed.state()
    assert (state["running"], state["database"], state["stopped"]) == (
        "0.1.0",
        "schema of 0.1.0",
        [],
    )
    assert leftovers(installed) == []


@pytest.mark.parametrize("step", ["backup", "build", "check-config"])
def test_a_step_before_the_stop_fails_and_nothing_changes(installed: Bench, step: str) -> None:
    """A failed recovery point, build, or a config.toml the new image refuses stops with
    exit 1 while 0.1.0 keeps serving: nothing was stopped or dumped."""
    installed.configure(fail=[step])
    env_before = (installed.install_dir / ".env").read_bytes()
    code, output = upgrade(installed)
    assert code == 1, output
    assert "Nothing was changed" in output or "nothing was changed" in output
    assert (installed.install_dir / ".env").read_bytes() == env_before
    commands = installed.compose_commands()
    assert "stop web worker" not in commands and DUMP not in commands
    assert (installed.state()["running"], installed.state()["stopped"]) == ("0.1.0", [])
    if step == "check-config":
        assert "0.2.0 refuses" in output and "server.public_url" in output


def test_a_failed_dump_starts_the_old_version_again_without_a_restore(installed: Bench) -> None:
    """web and worker stop for the dump; when it fails they start again on the untouched
    database (no migration ran, so nothing is restored); exit 1."""
    installed.configure(fail=["pg_dump"])
    env_before = (installed.install_dir / ".env").read_bytes()
    code, output = upgrade(installed)
    assert code == 1, output
    assert "stopped before anything was changed (the database could not be dumped)" in output
    commands = installed.compose_commands()
    assert commands.index("stop web worker") < commands.index(DUMP)
    assert not [c for c in commands if c in RESTORE or c == "up postgres"]
    assert (installed.install_dir / ".env").read_bytes() == env_before
    state = installed.state()
    assert (state["running"], state["stopped"], state["database"]) == (
        "0.1.0",
        [],
        "schema of 0.1.0",
    )
    assert not list((installed.install_dir / "upgrade").glob("*.dump*"))
    assert leftovers(installed) == []


def test_the_same_version_checks_health_before_nothing_to_do(installed: Bench) -> None:
    """Running the upgrade of the installed version changes nothing; it says "nothing to do"
    only when the stack is healthy, and otherwise names what is not."""
    result = installed.run("upgrade.sh", "--dir", str(installed.install_dir))
    assert result.returncode == 0
    assert "runs 0.1.0 already and is healthy: nothing to do" in result.stdout
    assert {c.split()[0] for c in installed.compose_commands()} == {"ps"}
    installed.configure(unhealthy=["0.1.0"])
    result = installed.run("upgrade.sh", "--dir", str(installed.install_dir), "--wait", "1")
    assert result.returncode == 1
    assert "not every service is healthy" in result.stderr
    assert "web (unhealthy)" in result.stderr


def test_a_downgrade_is_refused(installed: Bench) -> None:
    """An older release's upgrade.sh refuses: migrations only go forward."""
    assert upgrade(installed)[0] == 0
    result = installed.run("upgrade.sh", "--dir", str(installed.install_dir), version="0.1.0")
    assert result.returncode == 1
    assert "runs 0.2.0, newer than 0.1.0" in result.stderr
    assert version_in_env(installed) == "0.2.0"


def _start_upgrade(bench: Bench) -> subprocess.Popen[str]:
    script = bench.release("0.2.0") / "installer" / "upgrade.sh"
    return subprocess.Popen(
        ["bash", str(script), "--dir", str(bench.install_dir), "--wait", "30"],
        env=bench.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_health_polls(bench: Bench) -> None:
    """Until the upgrade polls the new services' health (it has migrated and started them)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        commands = bench.compose_commands()
        if (
            "up" in commands
            and commands[-1].startswith("ps")
            and commands.index("up") < len(commands) - 1
        ):
            return
        time.sleep(0.1)
    raise AssertionError(f"the upgrade never waited for health: {bench.compose_commands()}")


def test_sigterm_while_waiting_for_health_rolls_back(installed: Bench) -> None:
    """SIGTERM mid-way runs the rollback (database restored, 0.1.0 back, exit 4); nothing is
    left for the next run, which upgrades."""
    installed.configure(unhealthy=["0.2.0"])
    process = _start_upgrade(installed)
    _wait_for_health_polls(installed)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 4, output
    assert "interrupted by SIGTERM; rolling back to 0.1.0" in output
    assert [c for c in installed.compose_commands() if c in RESTORE] == RESTORE
    state = installed.state()
    assert (state["running"], state["database"]) == ("0.1.0", "schema of 0.1.0")
    assert leftovers(installed) == []
    installed.configure(unhealthy=[])
    code, output = upgrade(installed)
    assert code == 0, output
    assert "did not finish" not in output


def test_a_killed_upgrade_is_rolled_back_by_the_next_run(installed: Bench) -> None:
    """After SIGKILL (no trap runs) the state file says how far the upgrade got; the next run
    finishes the rollback, restores the dump the state names, and says so."""
    installed.configure(unhealthy=["0.2.0"])
    process = _start_upgrade(installed)
    _wait_for_health_polls(installed)
    process.kill()
    process.communicate(timeout=60)
    state_file = installed.install_dir / "upgrade" / "state"
    recorded = dict(line.split("=", 1) for line in state_file.read_text().splitlines())
    assert (recorded["old"], recorded["new"], recorded["phase"]) == ("0.1.0", "0.2.0", "starting")
    assert installed.state()["running"] == "0.2.0"
    time.sleep(1)  # the killed script's last `sleep` ends
    installed.forget_calls()
    code, output = upgrade(installed)
    assert code == 4, output
    assert "an earlier upgrade from 0.1.0 to 0.2.0 did not finish (it got to: starting)" in output
    restore = next(c for c in installed.calls() if "pg_restore" in c["argv"])
    assert restore["stdin_bytes"] == Path(recorded["dump"]).stat().st_size > 0
    state = installed.state()
    assert (state["running"], state["database"]) == ("0.1.0", "schema of 0.1.0")
    assert version_in_env(installed) == "0.1.0"
    assert leftovers(installed) == []


def test_a_second_upgrade_waits_for_the_lock_and_refuses(installed: Bench) -> None:
    """While another install or upgrade holds the folder's lock, the upgrade touches nothing."""
    with (installed.install_dir / "upgrade" / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        code, output = upgrade(installed)
    assert code == 1
    assert "another install or upgrade is running" in output
    assert installed.compose_commands() == []
    assert version_in_env(installed) == "0.1.0"


def test_stale_copies_of_an_earlier_run_are_never_rolled_back_to(installed: Bench) -> None:
    """.env.previous and compose.previous without a state file are stale: removed at the start,
    so a rollback brings back the .env of this run."""
    folder = installed.install_dir
    (folder / ".env.previous").write_text("APPLIANCE_VERSION=0.0.1\n")
    (folder / "compose.previous").mkdir()
    env_before = (folder / ".env").read_bytes()
    installed.configure(unhealthy=["0.2.0"])
    code, output = upgrade(installed)
    assert code == 4, output
    assert (folder / ".env").read_bytes() == env_before
    assert leftovers(installed) == []


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("0.2.0rc1", "0.2.0"),
        ("0.2.0a1", "0.2.0b1"),
        ("0.2.0b2", "0.2.0rc1"),
        ("0.2.0", "0.2.0.1"),
        ("0.9.9", "0.10.0"),
        ("1.2.3.4", "1.2.4"),
    ],
)
def test_releases_are_ordered_like_pep_440(bench: Bench, older: str, newer: str) -> None:
    """Pre-releases come before their release and a fourth component counts."""
    lib = bench.release("0.1.0") / "installer" / "lib.sh"

    def compare(a: str, b: str) -> str:
        result = subprocess.run(
            ["bash", "-c", f'source "{lib}" && compare_releases "$1" "$2"', "-", a, b],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return result.stdout.strip()

    assert (compare(older, newer), compare(newer, older), compare(newer, newer)) == ("-1", "1", "0")


def test_a_release_candidate_upgrades_to_its_release_and_not_back(bench: Bench) -> None:
    """0.2.0rc1 -> 0.2.0 is an upgrade; 0.2.0 -> 0.2.0rc1 is refused as a downgrade; 0.2.0 and
    0.2.0.0 are the same release."""
    assert bench.install(*internet_flags(), version="0.2.0rc1").returncode == 0
    code, output = upgrade(bench, version="0.2.0")
    assert code == 0, output
    assert version_in_env(bench) == "0.2.0"
    code, output = upgrade(bench, version="0.2.0rc1")
    assert code == 1
    assert "runs 0.2.0, newer than 0.2.0rc1" in output
    code, output = upgrade(bench, version="0.2.0.0")
    assert code == 0 and "nothing to do" in output


@pytest.mark.parametrize("version", ["0.3", "0.3.0.dev1", "0.3.0-rc1", "0.3.0.post1"])
def test_a_version_it_cannot_order_is_refused(installed: Bench, version: str) -> None:
    """A version outside N.N.N[.N][aN|bN|rcN] is refused with the forms it understands."""
    code, output = upgrade(installed, version=version)
    assert code == 1
    assert f'"{version}" is not a release version' in output and "0.2.0rc1" in output
    assert installed.compose_commands() == []
