"""A stand-in for the ``docker`` command (the test machines have no Docker engine).

It answers like a Docker 27 engine with Compose v2 for the calls the installer and the upgrade
script make, keeps what a real engine would remember (built images, the running version, the
database's contents) in ``$DOCKER_STANDIN_DIR/state.json``, and records every call (argv, the
environment, the compose env file and what stdin carried) as a JSON line in
``$DOCKER_STANDIN_DIR/calls.jsonl``. ``$DOCKER_STANDIN_DIR/config.json``, written by a test,
changes its answers: ``server_version``, ``compose_version``, ``fail`` (steps that fail:
build, up, check-config, migrate, upgrade-check, backup, pg_dump, pg_restore), ``unhealthy``
(versions whose services never become healthy; "*" for all), ``migrate_exit_code`` (version,
or "*", to the exit code ``ps`` reports for that version's migrate container), ``setup_complete``,
``ps_array`` (print ``ps`` as one JSON array, as Compose before 2.21 did).
"""

from __future__ import annotations

import json
import os
import secrets
import select
import sys
from pathlib import Path
from typing import Any

FOLDER = Path(os.environ["DOCKER_STANDIN_DIR"])
SERVICES = ["postgres", "minio", "migrate", "web", "worker", "caddy"]
COMPOSE_OPTIONS = {"-p", "--project-name", "--env-file", "-f", "--file", "--project-directory"}


def _load(name: str, default: dict[str, Any]) -> dict[str, Any]:
    path = FOLDER / name
    return {**default, **json.loads(path.read_text())} if path.exists() else default


CONFIG = _load(
    "config.json",
    {
        "server_version": "27.3.1",
        "compose_version": "2.29.7",
        "fail": [],
        "unhealthy": [],
        "migrate_exit_code": {},
        "setup_complete": False,
        "ps_array": False,
    },
)


def _stdin() -> bytes:
    """What stdin carries, without waiting on a pipe nobody writes to."""
    try:
        if os.isatty(0) or not select.select([0], [], [], 0.05)[0]:
            return b""
        return sys.stdin.buffer.read()
    except (OSError, ValueError):
        return b""


def _env_file(path: str | None) -> dict[str, str]:
    values: dict[str, str] = {}
    if path is None:
        return values
    for line in Path(path).read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = value
    return values


def _fail(step: str, message: str) -> None:
    if step in CONFIG["fail"]:
        print(message, file=sys.stderr)
        raise SystemExit(1)


class Engine:
    """What the engine remembers between calls."""

    def __init__(self) -> None:
        self.state = _load(
            "state.json", {"images": [], "running": None, "stopped": [], "database": "empty"}
        )

    def save(self) -> None:
        (FOLDER / "state.json").write_text(json.dumps(self.state, indent=2))


def compose(engine: Engine, args: list[str], stdin: bytes, env: dict[str, str]) -> None:
    """``docker compose [global options] COMMAND ...``."""
    position = 0
    while position < len(args) and args[position].startswith("-"):
        position += 2 if args[position] in COMPOSE_OPTIONS else 1
    command, rest = args[position], args[position + 1 :]
    version = env.get("APPLIANCE_VERSION", "")
    if command == "version":
        short = CONFIG["compose_version"]
        print(short if "--short" in rest else f"Docker Compose version v{short}")
    elif command == "build":
        _fail("build", "failed to solve: process did not complete successfully: exit code 1")
        engine.state["images"].append(f"fotostudio-appliance:{version}")
        print(f"Image fotostudio-appliance:{version} Built")
    elif command == "up":
        _fail("up", "Error response from daemon: driver failed programming external connectivity")
        # `up -d postgres` starts postgres alone; services stopped before stay stopped.
        targets = [a for a in rest if not a.startswith("-")] or SERVICES
        stopped = [s for s in engine.state["stopped"] if s not in targets]
        engine.state.update(running=version, stopped=stopped)
        # The migrate service runs first; on a database migrated already it changes nothing.
        if "migrate" in targets and engine.state["database"] == "empty":
            engine.state["database"] = f"schema of {version}"
        if env.get("APPLIANCE_TLS") == "lan":
            ca = Path(env["APPLIANCE_DIR"], "data/caddy/caddy/pki/authorities/local/root.crt")
            ca.parent.mkdir(parents=True, exist_ok=True)
            ca.write_bytes((FOLDER / "root.crt").read_bytes())
    elif command == "stop":
        engine.state["stopped"] = sorted({*engine.state["stopped"], *rest})
    elif command == "ps":
        ps(engine, [a for a in rest if not a.startswith("-") and a != "json"])
    elif command in {"run", "exec"}:
        run(engine, command, rest, stdin, env)


def ps(engine: Engine, only: list[str]) -> None:
    running = engine.state["running"]
    if running is None:
        print("[]" if CONFIG["ps_array"] else "", end="")
        return
    sick = "*" in CONFIG["unhealthy"] or running in CONFIG["unhealthy"]
    codes = CONFIG["migrate_exit_code"]
    migrate_code = codes.get(running, codes.get("*", 0))
    containers = []
    for service in only or SERVICES:
        stopped = service in engine.state["stopped"]
        container: dict[str, Any] = {
            "ID": secrets.token_hex(32),
            "Name": f"fotostudio-{service}-1",
            "Command": '"docker-entrypoint.sh \\"Service\\":\\"x\\""',
            "Project": "fotostudio",
            "Service": service,
            "State": "exited" if service == "migrate" or stopped else "running",
            "Health": "" if service == "migrate" else ("unhealthy" if sick else "healthy"),
            "ExitCode": migrate_code if service == "migrate" else 0,
            "Publishers": [],
        }
        if service == "caddy":
            address = "0.0.0.0"  # noqa: S104 - what Docker prints; nothing binds here
            container["Publishers"] = [
                {"URL": address, "TargetPort": port, "PublishedPort": port, "Protocol": "tcp"}
                for port in (80, 443)
            ]
        containers.append(container)
    # Compact, as Go's encoder writes it.
    if CONFIG["ps_array"]:
        print(json.dumps(containers, separators=(",", ":")))
    else:
        print("\n".join(json.dumps(c, separators=(",", ":")) for c in containers))


def run(engine: Engine, command: str, args: list[str], stdin: bytes, env: dict[str, str]) -> None:
    """``run``/``exec``: the few commands the scripts run inside a container."""
    position = 0
    while args[position].startswith("-"):
        position += 2 if args[position] in {"-e", "--env", "-u", "--user", "-w"} else 1
    service, argv = args[position], args[position + 1 :]
    if command == "run":
        # The image's entrypoint is `appliance`; migrate's command is `migrate`.
        argv = ["appliance", *(argv or ["migrate"])]
    if command == "exec" and (
        engine.state["running"] is None or service in engine.state["stopped"]
    ):
        print(f"service {service!r} is not running", file=sys.stderr)
        raise SystemExit(1)
    line = " ".join(argv)
    if line == "appliance check-config":
        _fail("check-config", "Error: configuration error: server.public_url: must start with")
        print("configuration OK; data folder: /var/lib/appliance")
    elif line == "appliance migrate":
        _fail("migrate", "Error: migration 2026-11-30 failed: column already exists")
        engine.state["database"] = f"schema of {env.get('APPLIANCE_VERSION', '')}"
        print("applied 1 migration(s)")
    elif line == "appliance setup-token":
        if CONFIG["setup_complete"]:
            print("Error: set-up is already complete", file=sys.stderr)
            raise SystemExit(1)
        print(f"https://{env['APPLIANCE_SITE']}/setup?token={secrets.token_urlsafe(32)}")
    elif line == "appliance upgrade-check":
        _fail("upgrade-check", "not ready to upgrade:\n  - the last restore drill failed")
        print("ready to upgrade: the last recovery point is 2 h 0 min old")
    elif line == "appliance backup":
        _fail("backup", "Error: backup failed: repository is locked")
        print("recovery point made: 3f2a9c1e")
    elif argv and argv[0] == "pg_dump":
        _fail("pg_dump", "pg_dump: error: connection failed")
        sys.stdout.write(f"PGDMP\n{engine.state['database']}\n")
    elif argv and argv[0] == "dropdb":
        engine.state["database"] = "dropped"
    elif argv and argv[0] == "createdb":
        engine.state["database"] = "empty"
    elif argv and argv[0] == "pg_restore":
        _fail("pg_restore", "pg_restore: error: could not read input file")
        engine.state["database"] = stdin.decode().splitlines()[1]
    else:
        print(f"Error: No such command {line!r}.", file=sys.stderr)
        raise SystemExit(2)


def main() -> None:
    args = sys.argv[1:]
    stdin = _stdin()
    env_path = next(
        (args[i + 1] for i, a in enumerate(args[:-1]) if a == "--env-file"),
        None,
    )
    values = _env_file(env_path)
    # Compose's own rule: the environment wins over the env file.
    env = {**values, **{k: os.environ[k] for k in values.keys() & os.environ.keys()}}
    env.setdefault("APPLIANCE_VERSION", os.environ.get("APPLIANCE_VERSION", ""))
    with (FOLDER / "calls.jsonl").open("a") as log:
        record = {
            "argv": args,
            "environ": dict(os.environ),
            "env_file": env_path,
            "env_file_values": values,
            "version": env.get("APPLIANCE_VERSION", ""),
            "stdin_bytes": len(stdin),
        }
        log.write(json.dumps(record) + "\n")
    engine = Engine()
    try:
        if args[:1] == ["version"]:
            print(CONFIG["server_version"])
        elif args[:2] == ["image", "inspect"]:
            if args[2] not in engine.state["images"]:
                print(f"Error: No such image: {args[2]}", file=sys.stderr)
                raise SystemExit(1)
            print("[{}]")
        elif args[:1] == ["compose"]:
            compose(engine, args[1:], stdin, env)
    finally:
        engine.save()


if __name__ == "__main__":
    main()
