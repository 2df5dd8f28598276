"""installer/upgrade.sh against the stand-in ``docker``: the gate, the steps in their order,
and the rollback to the previous image, compose files and database."""

from __future__ import annotations

import pytest

from tests.packaging.conftest import Bench, internet_flags

GATE = "exec worker appliance upgrade-check"
BACKUP = "exec worker appliance backup"
DUMP = "exec postgres pg_dump appliance appliance"


@pytest.fixture
def installed(bench: Bench) -> Bench:
    """Version 0.1.0 installed and running; the log starts after the install."""
    result = bench.install(*internet_flags())
    assert result.returncode == 0, result.stderr
    bench.forget_calls()
    return bench


def upgrade(bench: Bench, *extra: str) -> tuple[int, str]:
    result = bench.run(
        "upgrade.sh", "--dir", str(bench.install_dir), "--wait", "2", *extra, version="0.2.0"
    )
    return result.returncode, result.stdout + result.stderr


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
    assert not (installed.install_dir / "upgrade").exists()


def test_force_upgrades_past_a_failing_gate(installed: Bench) -> None:
    """--force warns about the gate and upgrades."""
    installed.configure(fail=["upgrade-check"])
    code, output = upgrade(installed, "--force")
    assert code == 0, output
    assert "upgrading anyway (--force)" in output
    assert version_in_env(installed) == "0.2.0"


def test_an_upgrade_backs_up_dumps_builds_migrates_and_starts_in_order(installed: Bench) -> None:
    """The success path: gate, recovery point, dump, new image, new compose files and .env,
    migrations, start, health; the database dump is kept and private."""
    env_before = (installed.install_dir / ".env").read_text()
    code, output = upgrade(installed)
    assert code == 0, output
    assert "Upgraded from 0.1.0 to 0.2.0" in output
    commands = installed.compose_commands()
    assert commands[:7] == [
        GATE,
        BACKUP,
        DUMP,
        "build",
        "stop web worker",
        "run migrate",
        "up",
    ]
    assert all(c.startswith("ps") for c in commands[7:])
    build = next(c for c in installed.calls() if "build" in c["argv"])
    assert build["version"] == "0.2.0"
    migrate = next(c for c in installed.calls() if "run" in c["argv"])
    assert migrate["env_file_values"]["APPLIANCE_VERSION"] == "0.2.0"
    # .env: only the version changed; the compose files are the new release's.
    assert (installed.install_dir / ".env").read_text() == env_before.replace(
        "APPLIANCE_VERSION=0.1.0", "APPLIANCE_VERSION=0.2.0"
    )
    assert (installed.install_dir / ".env").stat().st_mode & 0o777 == 0o600
    compose = (installed.install_dir / "compose" / "docker-compose.yml").read_text()
    assert compose.startswith("# the bundle of release 0.2.0")
    [dump] = (installed.install_dir / "upgrade").iterdir()
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
    assert commands[rollback : rollback + 5] == [
        "stop web worker",
        "exec postgres dropdb appliance appliance",
        "exec postgres createdb appliance appliance appliance",
        "exec postgres pg_restore appliance appliance",
        "up",
    ]
    restore = next(c for c in installed.calls() if "pg_restore" in c["argv"])
    [dump] = (installed.install_dir / "upgrade").iterdir()
    assert restore["stdin_bytes"] == dump.stat().st_size > 0
    last_up = [c for c in installed.calls() if c["argv"][-3:] == ["up", "-d", "--remove-orphans"]][
        -1
    ]
    assert last_up["version"] == "0.1.0"
    state = installed.state()
    assert (state["running"], state["database"]) == ("0.1.0", "schema of 0.1.0")


def test_a_failing_rollback_says_so_with_exit_5(installed: Bench) -> None:
    """When the database cannot be restored either, exit 5 names what failed and the dump."""
    installed.configure(unhealthy=["0.2.0"], fail=["pg_restore"])
    code, output = upgrade(installed)
    assert code == 5, output
    assert "the rollback failed too: restoring the database from" in output
    assert "docs/upgrade.md" in output


@pytest.mark.parametrize("step", ["backup", "pg_dump", "build"])
def test_a_step_before_the_switch_fails_and_nothing_changes(installed: Bench, step: str) -> None:
    """A failed recovery point, dump or build stops with exit 1 while 0.1.0 keeps running."""
    installed.configure(fail=[step])
    env_before = (installed.install_dir / ".env").read_bytes()
    code, output = upgrade(installed)
    assert code == 1, output
    assert "nothing was changed" in output
    assert (installed.install_dir / ".env").read_bytes() == env_before
    assert "stop web worker" not in installed.compose_commands()
    assert installed.state()["running"] == "0.1.0"
    if step == "pg_dump":
        assert not list((installed.install_dir / "upgrade").iterdir())


def test_the_same_version_is_nothing_to_do(installed: Bench) -> None:
    """Running the upgrade of the installed version changes nothing and says so."""
    result = installed.run("upgrade.sh", "--dir", str(installed.install_dir))
    assert result.returncode == 0
    assert "runs 0.1.0 already: nothing to do" in result.stdout
    assert installed.compose_commands() == []


def test_a_downgrade_is_refused(installed: Bench) -> None:
    """An older release's upgrade.sh refuses: migrations only go forward."""
    assert upgrade(installed)[0] == 0
    result = installed.run("upgrade.sh", "--dir", str(installed.install_dir), version="0.1.0")
    assert result.returncode == 1
    assert "runs 0.2.0, newer than 0.1.0" in result.stderr
    assert version_in_env(installed) == "0.2.0"
