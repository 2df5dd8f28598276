"""installer/install.sh, run with bash against the stand-in ``docker``: the files it writes,
the secrets, what it refuses, and that a second run changes nothing."""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import tomllib
from pathlib import Path

import pytest

from appliance.config import Settings, load_settings
from tests.packaging.conftest import (
    PUBLIC_IP,
    REPOSITORY,
    SECRET_NAMES,
    Bench,
    internet_flags,
)

ENV_KEYS = {
    "COMPOSE_PROJECT_NAME",
    "APPLIANCE_VERSION",
    "APPLIANCE_SITE",
    "APPLIANCE_TLS",
    "ACME_EMAIL",
    "APPLIANCE_DIR",
    "APPLIANCE_SUBNET",
    "APPLIANCE_CADDY_IP",
    "APPLIANCE_DYNAMIC_RANGE",
    "TZ",
}
APP_UID = 10001


def read_env(path: Path) -> dict[str, str]:
    """The .env as compose reads it; every line must be a comment or KEY=VALUE."""
    values = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        assert re.fullmatch(r"[A-Z_]+=[^\s'\"$`\\]*", line), line
        key, _, value = line.partition("=")
        values[key] = value
    return values


def secrets_of(install_dir: Path) -> dict[str, str]:
    return {name: (install_dir / "secrets" / name).read_text() for name in SECRET_NAMES}


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below the folder: its content and modification time."""
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def settings_from(install_dir: Path, tmp_path: Path) -> Settings:
    """config.toml loaded by the app itself, its container paths moved into tmp_path."""
    text = (install_dir / "config.toml").read_text()
    text = text.replace("/run/secrets/", f"{install_dir}/secrets/")
    text = text.replace("/var/lib/appliance", str(tmp_path / "app-data"))
    moved = tmp_path / "config-moved.toml"
    moved.write_text(text)
    return load_settings(moved, environ={})


def assert_nothing_installed(bench: Bench) -> None:
    assert not bench.install_dir.exists()
    assert not [c for c in bench.compose_commands() if c.split()[0] in {"build", "up", "run"}]


def test_answers_from_a_pipe_install_an_internet_site(bench: Bench, tmp_path: Path) -> None:
    """Answers piped to stdin make the secrets, config.toml, .env and compose/ the bundle needs,
    start it, and print the setup link; no secret reaches docker's arguments or environment."""
    answers = "\n".join(
        [
            "internet",
            "photos.example.com",
            "it@example.com",
            "Europe/Berlin",
            str(bench.install_dir),
            "y",
        ]
    )
    # A line after the answers: a docker call that inherited stdin would swallow it.
    piped = answers + "\nnot for docker\n"
    result = bench.run("install.sh", "--public-ip", PUBLIC_IP, stdin=piped)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = bench.install_dir

    # The secrets: private files in a private folder, strong and all different.
    values = secrets_of(folder)
    assert mode(folder / "secrets") == 0o700
    for name in SECRET_NAMES:
        assert mode(folder / "secrets" / name) == 0o600, name
    made = [values[n] for n in SECRET_NAMES if n not in {"database_url", "storage_secret_key"}]
    for secret in made:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", secret), secret
    assert len(set(made)) == len(made)
    assert values["database_url"] == (
        f"postgresql://appliance:{values['postgres_password']}@postgres:5432/appliance"
    )
    assert values["storage_secret_key"] == values["minio_root_password"]

    # Owners per the bundle's contract, where the installer may chown (it runs as root).
    if os.geteuid() == 0:
        owners = {name: (folder / "secrets" / name).stat().st_uid for name in SECRET_NAMES}
        assert owners == {
            "postgres_password": 999,
            "database_url": APP_UID,
            "minio_root_password": 0,
            "storage_secret_key": APP_UID,
            "secret_key": APP_UID,
            "restic_password": APP_UID,
            "metrics_token": APP_UID,
        }
        assert (folder / "config.toml").stat().st_gid == APP_UID
        assert (folder / "data" / "app").stat().st_uid == APP_UID
        assert (folder / "backup").stat().st_uid == APP_UID

    # .env: the keys compose needs, private.
    assert mode(folder / ".env") == 0o600
    env = read_env(folder / ".env")
    assert set(env) == ENV_KEYS
    assert env["APPLIANCE_SITE"] == "photos.example.com"
    assert env["APPLIANCE_TLS"] == "internet"
    assert env["ACME_EMAIL"] == "it@example.com"
    assert env["APPLIANCE_DIR"] == str(folder)
    assert env["APPLIANCE_VERSION"] == "0.1.0"
    assert env["TZ"] == "Europe/Berlin"

    # config.toml: valid TOML the app accepts, with the secrets read from their files.
    assert mode(folder / "config.toml") == 0o640
    raw = tomllib.loads((folder / "config.toml").read_text())
    assert raw["database"] == {"url_file": "/run/secrets/database_url"}
    settings = settings_from(folder, tmp_path)
    assert settings.server.public_url == "https://photos.example.com"
    assert settings.server.allowed_hosts == ["photos.example.com"]
    # Only Caddy's fixed address in the internal network may set X-Forwarded-*.
    assert settings.server.trusted_proxies == [f"{env['APPLIANCE_CADDY_IP']}/32"]
    subnet = ipaddress.ip_network(env["APPLIANCE_SUBNET"])
    assert ipaddress.ip_address(env["APPLIANCE_CADDY_IP"]) in subnet
    assert ipaddress.ip_address(env["APPLIANCE_CADDY_IP"]) not in ipaddress.ip_network(
        env["APPLIANCE_DYNAMIC_RANGE"]
    )
    assert settings.database.url == values["database_url"]
    assert settings.security.secret_key == values["secret_key"]
    assert settings.storage.secret_key == values["minio_root_password"]
    assert settings.monitoring.metrics_token == values["metrics_token"]
    assert settings.backups.timezone == "Europe/Berlin"
    assert settings.backups.password_file == str(folder / "secrets" / "restic_password")
    assert [r.url for r in settings.backups.repositories] == ["/backup/repository"]

    # What ran, in order, and that docker never saw a secret or ate the piped answers.
    assert (folder / "compose" / "docker-compose.yml").read_text().startswith("# the bundle")
    commands = bench.compose_commands()
    assert commands[:3] == ["build", "run migrate check-config", "up"]
    assert commands[-1] == "exec web appliance setup-token"
    assert all(c.startswith("ps") for c in commands[3:-1])
    calls = bench.calls()
    assert all(call["stdin_bytes"] == 0 for call in calls)
    assert all(call["env_file"] == str(folder / ".env") for call in calls if call["env_file"])
    log = (bench.standin_dir / "calls.jsonl").read_text()
    for name, secret in values.items():
        assert secret not in log, name
        assert secret not in result.stdout + result.stderr, name
    link = re.search(r"https://photos\.example\.com/setup\?token=[A-Za-z0-9_-]{40,}", result.stdout)
    assert link, result.stdout


def test_a_second_run_with_the_same_answers_changes_nothing(bench: Bench) -> None:
    """Every file stays byte for byte with its modification time; the image is not built again."""
    first = bench.install(*internet_flags())
    assert first.returncode == 0, first.stderr
    before = snapshot(bench.install_dir)
    bench.forget_calls()
    second = bench.install(*internet_flags())
    assert second.returncode == 0, second.stderr
    assert snapshot(bench.install_dir) == before
    assert not list(bench.install_dir.rglob("*.bak"))
    assert "built already" in second.stdout
    assert "build" not in bench.compose_commands()
    assert "restart web worker" not in bench.compose_commands()
    assert "made secrets" not in second.stdout and "wrote" not in second.stdout


def test_a_changed_answer_rewrites_config_and_keeps_the_old_one(bench: Bench) -> None:
    """Another time zone rewrites config.toml and .env (old ones kept as .bak), never a secret."""
    assert bench.install(*internet_flags()).returncode == 0
    secrets_before = secrets_of(bench.install_dir)
    old_config = (bench.install_dir / "config.toml").read_text()
    flags = internet_flags()
    flags[flags.index("Europe/Berlin")] = "America/New_York"
    bench.forget_calls()
    result = bench.install(*flags)
    assert result.returncode == 0, result.stderr
    assert secrets_of(bench.install_dir) == secrets_before
    assert (bench.install_dir / "config.toml.bak").read_text() == old_config
    assert 'timezone = "America/New_York"' in (bench.install_dir / "config.toml").read_text()
    assert read_env(bench.install_dir / ".env")["TZ"] == "America/New_York"
    assert mode(bench.install_dir / ".env.bak") == 0o600
    assert not list((bench.install_dir / "secrets").glob("*.bak"))
    # The containers mounted the old file: the web server and the worker start again.
    commands = bench.compose_commands()
    assert commands.index("restart web worker") == commands.index("up") + 1


@pytest.mark.parametrize("ps_array", [False, True], ids=["json-lines", "json-array"])
def test_lan_install_exports_the_root_certificate(
    bench: Bench, root_certificate: bytes, ps_array: bool
) -> None:
    """In LAN mode the site is a local name, no e-mail is kept, and Caddy's root certificate is
    copied beside the install with how to trust it; `ps` is read in both Compose formats."""
    bench.configure(ps_array=ps_array)
    result = bench.install(
        "--mode", "lan", "--domain", "Fotostudio.LAN", "--email", "ignored@example.com"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    env = read_env(bench.install_dir / ".env")
    assert env["APPLIANCE_SITE"] == "fotostudio.lan"
    assert env["APPLIANCE_TLS"] == "lan"
    assert env["ACME_EMAIL"] == ""
    exported = bench.install_dir / "fotostudio-root-ca.crt"
    assert exported.read_bytes() == root_certificate
    assert mode(exported) == 0o644
    der = ssl.PEM_cert_to_DER_cert(root_certificate.decode())
    fingerprint = ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())
    assert fingerprint in result.stdout
    assert "certutil -addstore" in result.stdout and "update-ca-certificates" in result.stdout
    assert "https://fotostudio.lan/setup?token=" in result.stdout


def test_lan_accepts_an_ipv4_address_but_not_a_bad_one(bench: Bench) -> None:
    """A LAN site may be an IPv4 address; 300.1.1.1 is refused."""
    bad = bench.install("--mode", "lan", "--domain", "300.1.1.1")
    assert bad.returncode == 2
    assert "is not a host name" in bad.stderr
    good = bench.install("--mode", "lan", "--domain", "192.168.10.5")
    assert good.returncode == 0, good.stderr
    assert read_env(bench.install_dir / ".env")["APPLIANCE_SITE"] == "192.168.10.5"


@pytest.mark.parametrize(
    ("flag", "value", "problem"),
    [
        ("--domain", "photos.example.com; rm -rf /", "is not a domain name"),
        ("--domain", "$(touch /tmp/owned).example.com", "is not a domain name"),
        ("--timezone", "Mars/Olympus_Mons", "is not a time zone"),
        ("--timezone", "../../../etc/passwd", "is not a time zone"),
        ("--email", "it@@example.com", "is not an e-mail address"),
        ("--email", "it@example.com\nTZ=evil", "is not an e-mail address"),
        ("--dir", "relative/folder", "is not an absolute folder path"),
    ],
)
def test_hostile_flags_are_refused_before_anything_is_written(
    bench: Bench, flag: str, value: str, problem: str
) -> None:
    """A bad or hostile value stops the run with the reason; nothing is written or started."""
    flags = internet_flags()
    if flag in flags:
        flags[flags.index(flag) + 1] = value
    else:
        flags += [flag, value]
    result = bench.install(*flags)
    assert result.returncode == 2
    assert problem in result.stderr
    assert "Nothing was changed" in result.stderr
    assert_nothing_installed(bench)


def test_bad_answers_are_asked_again(bench: Bench) -> None:
    """Interactively, a wrong answer is explained and asked again; the right one is kept."""
    answers = [
        "internet",
        "photos.example.com; rm -rf /",
        "photos.example.com",
        "not an address",
        "",
        "Mars/Olympus_Mons",
        "Europe/Vienna",
        str(bench.install_dir),
        "yes",
    ]
    result = bench.run("install.sh", "--public-ip", PUBLIC_IP, stdin="\n".join(answers) + "\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "'photos.example.com; rm -rf /' is not a domain name" in result.stdout
    assert "'not an address' is not an e-mail address" in result.stdout
    assert "'Mars/Olympus_Mons' is not a time zone" in result.stdout
    env = read_env(bench.install_dir / ".env")
    assert (env["APPLIANCE_SITE"], env["ACME_EMAIL"], env["TZ"]) == (
        "photos.example.com",
        "",
        "Europe/Vienna",
    )


@pytest.mark.parametrize("answer", ["n", ""], ids=["no", "input-ended"])
def test_without_confirmation_nothing_is_written(bench: Bench, answer: str) -> None:
    """Declining the summary, or input that ends before it, leaves the machine as it was."""
    answers = ["lan", "fotostudio.lan", "UTC", str(bench.install_dir)] + (
        [answer] if answer else []
    )
    result = bench.run("install.sh", stdin="\n".join(answers) + "\n")
    assert result.returncode == 1
    assert "not confirmed. Nothing was changed." in result.stderr
    assert "About to install Fotostudio Appliance 0.1.0" in result.stdout
    assert_nothing_installed(bench)


@pytest.mark.parametrize(
    ("answers", "problem"),
    [
        ({"server_version": "20.10.24"}, "Docker 20.10.24 is too old: 24 or newer is needed"),
        ({"compose_version": "1.29.2"}, "Docker Compose 1.29.2 is too old: v2 is needed"),
    ],
)
def test_old_docker_is_refused(bench: Bench, answers: dict[str, str], problem: str) -> None:
    """Docker before 24 or Compose v1 stop the installer before it writes anything."""
    bench.configure(**answers)
    result = bench.install(*internet_flags())
    assert result.returncode == 1
    assert problem in result.stderr and "Fix:" in result.stderr
    assert_nothing_installed(bench)


def test_a_busy_port_is_refused(bench: Bench) -> None:
    """A port Caddy needs that another program listens on is named, with how to find it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        bench.env["FOTOSTUDIO_PORTS"] = f"{port}"
        result = bench.install(*internet_flags())
    assert result.returncode == 1
    assert f"port {port} is in use by another program" in result.stderr
    assert_nothing_installed(bench)


def test_a_domain_pointing_elsewhere_is_refused(bench: Bench) -> None:
    """In internet mode the domain must resolve to this server (or the given public address)."""
    elsewhere = bench.install(*internet_flags(public_ip=None))
    assert elsewhere.returncode == 1
    assert "photos.example.com resolves to 203.0.113.10; 203.0.113.10 is not an address" in (
        elsewhere.stderr
    )
    assert "--public-ip" in elsewhere.stderr
    flags = internet_flags()
    flags[flags.index("photos.example.com")] = "nowhere.example.com"
    unknown = bench.install(*flags)
    assert unknown.returncode == 1
    assert "nowhere.example.com does not resolve" in unknown.stderr
    assert_nothing_installed(bench)


def test_a_clock_out_of_sync_is_refused(bench: Bench, tmp_path: Path) -> None:
    """timedatectl saying the clock is not synchronised stops the install."""
    tools = tmp_path / "tools"
    tools.mkdir()
    timedatectl = tools / "timedatectl"
    timedatectl.write_text("#!/bin/sh\necho no\n")
    timedatectl.chmod(0o755)
    bench.env["PATH"] = f"{tools}:{bench.env['PATH']}"
    result = bench.install(*internet_flags())
    assert result.returncode == 1
    assert "the clock is not synchronised" in result.stderr
    assert_nothing_installed(bench)


def test_too_little_disk_is_refused(bench: Bench) -> None:
    """Less free space than needed at the install folder stops the install."""
    bench.env["FOTOSTUDIO_MIN_DISK_GB"] = "999999999"
    result = bench.install(*internet_flags())
    assert result.returncode == 1
    assert "GB are free at" in result.stderr and "needs 999999999 GB" in result.stderr
    assert_nothing_installed(bench)


def test_a_folder_with_other_files_is_refused(bench: Bench) -> None:
    """An existing, non-empty folder that holds no install is not taken over."""
    bench.install_dir.mkdir()
    (bench.install_dir / "notes.txt").write_text("mine")
    result = bench.install(*internet_flags())
    assert result.returncode == 1
    assert "exists and is not empty" in result.stderr
    assert sorted(p.name for p in bench.install_dir.iterdir()) == ["notes.txt"]


def test_a_failing_start_says_where_to_look(bench: Bench) -> None:
    """When `compose up` fails the installer stops and names the logs; secrets stay for the
    next run."""
    bench.configure(fail=["up"])
    result = bench.install(*internet_flags())
    assert result.returncode == 1
    assert "starting the services failed" in result.stderr and "logs" in result.stderr
    assert (bench.install_dir / "secrets" / "restic_password").exists()
    assert "setup?token" not in result.stdout


def test_services_that_never_get_healthy_time_out(bench: Bench) -> None:
    """Health is polled until --wait runs out; the services still waiting are named."""
    bench.configure(unhealthy=["*"])
    result = bench.install(*internet_flags(), "--wait", "2")
    assert result.returncode == 1
    assert "web (unhealthy)" in result.stderr and "caddy (unhealthy)" in result.stderr
    assert "not healthy after 2 s" in result.stderr
    polls = [c for c in bench.compose_commands() if c.startswith("ps")]
    assert 2 <= len(polls) <= 5


def test_a_config_the_app_refuses_stops_before_starting(bench: Bench) -> None:
    """check-config in the image is the judge of config.toml; its refusal stops the install."""
    bench.configure(fail=["check-config"])
    result = bench.install(*internet_flags())
    assert result.returncode == 1
    assert "the appliance refused" in result.stderr and "server.public_url" in result.stderr
    assert "up" not in bench.compose_commands()


def test_a_finished_setup_prints_no_link(bench: Bench) -> None:
    """Once the wizard is done, a re-run says so instead of failing on the setup token."""
    assert bench.install(*internet_flags()).returncode == 0
    bench.configure(setup_complete=True)
    result = bench.install(*internet_flags())
    assert result.returncode == 0, result.stderr
    assert "set-up is complete" in result.stdout and "setup?token" not in result.stdout


def test_another_version_in_the_folder_is_left_to_upgrade(bench: Bench) -> None:
    """install.sh never changes the version of an existing install: that is upgrade.sh's job."""
    assert bench.install(*internet_flags()).returncode == 0
    result = bench.install(*internet_flags(), version="0.2.0")
    assert result.returncode == 1
    assert "runs version 0.1.0 and this installer is version 0.2.0" in result.stderr
    assert read_env(bench.install_dir / ".env")["APPLIANCE_VERSION"] == "0.1.0"


@pytest.mark.skipif(
    not (REPOSITORY / "compose" / "docker-compose.yml").exists(), reason="no compose bundle"
)
def test_the_written_env_satisfies_the_real_bundle(bench: Bench) -> None:
    """Compose's own `config` accepts the repository's bundle with the .env the installer
    wrote, and every secret file the bundle names exists."""
    release = bench.release("0.1.0")
    shutil.rmtree(release / "compose")
    shutil.copytree(REPOSITORY / "compose", release / "compose")
    assert bench.install(*internet_flags()).returncode == 0
    compose = shutil.which("docker-compose", path=str(REPOSITORY / ".tools" / "bin"))
    if compose is None:
        pytest.skip("Docker Compose v2 is not in .tools/bin (make tools-test)")
    result = subprocess.run(
        [
            compose,
            "--env-file",
            str(bench.install_dir / ".env"),
            "-f",
            str(bench.install_dir / "compose" / "docker-compose.yml"),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    bundle = json.loads(result.stdout)
    for name, secret in bundle["secrets"].items():
        assert Path(secret["file"]).is_file(), name
        assert Path(secret["file"]).parent == bench.install_dir / "secrets"
    assert bundle["services"]["caddy"]["environment"]["APPLIANCE_SITE"] == "photos.example.com"


def test_the_fotostudio_command_runs_compose_on_the_folder(bench: Bench) -> None:
    """The installer leaves ``fotostudio`` in the folder: docker compose on this install, with
    the site's own override file once one exists beside .env."""
    assert bench.install(*internet_flags()).returncode == 0
    wrapper = bench.install_dir / "fotostudio"
    assert mode(wrapper) == 0o755
    bench.forget_calls()

    def last_call(*args: str) -> list[str]:
        result = subprocess.run(
            [str(wrapper), *args], env=bench.env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        argv: list[str] = bench.calls()[-1]["argv"]
        return argv

    folder = bench.install_dir
    argv = last_call("ps")
    assert argv[:3] == ["compose", "--project-name", "fotostudio"]
    assert argv[argv.index("--env-file") + 1] == str(folder / ".env")
    files = [argv[i + 1] for i, a in enumerate(argv) if a == "--file"]
    assert files == [str(folder / "compose" / "docker-compose.yml")]
    assert argv[-1] == "ps"

    (folder / "docker-compose.override.yml").write_text("services: {}\n")
    argv = last_call("logs", "web")
    files = [argv[i + 1] for i, a in enumerate(argv) if a == "--file"]
    assert files[-1] == str(folder / "docker-compose.override.yml")
    assert argv[-2:] == ["logs", "web"]
    # The installer's own compose calls take the override too.
    bench.forget_calls()
    assert bench.install(*internet_flags()).returncode == 0
    for call in bench.calls():
        if call["argv"][:1] == ["compose"] and "--env-file" in call["argv"]:
            assert str(folder / "docker-compose.override.yml") in call["argv"], call["argv"]


SITE_MARKER = (
    "# --- Site settings: everything below this line is kept when the installer runs again ---"
)
ANSIBLE_BLOCK = """# BEGIN extra backup repositories (managed by Ansible, role fotostudio)
[[backups.repositories]]
name = "nas"
url = "/mnt/nas/fotostudio"
offsite = true
# END extra backup repositories (managed by Ansible, role fotostudio)
"""


def test_a_stale_record_beside_the_right_one_is_refused(bench: Bench) -> None:
    """Every A and AAAA record must be this server: one matching record is not enough."""
    hosts = Path(bench.env["FOTOSTUDIO_HOSTS_FILE"])
    hosts.write_text(hosts.read_text() + "2001:db8::dead photos.example.com\n")
    stale = bench.install(*internet_flags())
    assert stale.returncode == 1
    assert "2001:db8::dead is not an address of this server" in stale.stderr
    assert "203.0.113.10 is not" not in stale.stderr
    assert_nothing_installed(bench)
    both = bench.install(*internet_flags(), "--public-ip", "2001:DB8::DEAD")
    assert both.returncode == 0, both.stderr


def _tool(folder: Path, name: str, script: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(script)
    (folder / name).chmod(0o755)


def test_dig_is_asked_before_etc_hosts(bench: Bench, tmp_path: Path) -> None:
    """Without the test resolver the records come from dig, one query for A and one for AAAA,
    and only the addresses it prints count (not the CNAME)."""
    del bench.env["FOTOSTUDIO_HOSTS_FILE"]
    tools = tmp_path / "tools"
    log = tmp_path / "dig.log"
    _tool(
        tools,
        "dig",
        f"""#!/bin/sh
echo "$@" >>{log}
echo front.example.net.
case "$*" in *AAAA*) echo 2001:db8::dead ;; *) echo {PUBLIC_IP} ;; esac
""",
    )
    bench.env["PATH"] = f"{tools}:{bench.env['PATH']}"
    result = bench.install(*internet_flags())
    assert result.returncode == 1
    assert "resolves to 2001:db8::dead, 203.0.113.10; 2001:db8::dead is not" in result.stderr
    asked = log.read_text().splitlines()
    assert [line.split()[-2:] for line in asked] == [
        ["photos.example.com", "A"],
        ["photos.example.com", "AAAA"],
    ]
    assert all("+short" in line for line in asked)


def _dns_server(records: dict[int, bytes]) -> tuple[socket.socket, threading.Thread]:
    """A one-name DNS server on UDP: answers each question with the records of its type."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                message, peer = server.recvfrom(512)
            except OSError:
                return
            question = message[12:]
            rtype = struct.unpack("!H", question[question.index(0) + 1 :][:2])[0]
            answers = [
                b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 60, len(data)) + data
                for data in ([records[rtype]] if rtype in records else [])
            ]
            header = message[:2] + struct.pack("!HHHHH", 0x8180, 1, len(answers), 0, 0)
            server.sendto(header + question + b"".join(answers), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def test_without_dig_python_asks_the_dns_server_itself(bench: Bench) -> None:
    """With neither dig nor host, python3 queries the name server directly (not /etc/hosts);
    a stale AAAA record it returns is refused, and the right records pass."""
    if shutil.which("dig") or shutil.which("host"):
        pytest.skip("dig or host is installed: the installer prefers them")
    del bench.env["FOTOSTUDIO_HOSTS_FILE"]
    stale = {1: socket.inet_aton(PUBLIC_IP), 28: socket.inet_pton(socket.AF_INET6, "2001:db8::1")}
    server, _ = _dns_server(stale)
    with server:
        bench.env["FOTOSTUDIO_NAMESERVER"] = f"127.0.0.1:{server.getsockname()[1]}"
        result = bench.install(*internet_flags())
    assert result.returncode == 1
    assert "python3 asks the DNS server" in result.stderr
    assert "resolves to 2001:db8::1, 203.0.113.10; 2001:db8::1 is not" in result.stderr
    server, _ = _dns_server({1: socket.inet_aton(PUBLIC_IP)})
    with server:
        bench.env["FOTOSTUDIO_NAMESERVER"] = f"127.0.0.1:{server.getsockname()[1]}"
        assert bench.install(*internet_flags()).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_a_second_run_repairs_a_wrong_group(bench: Bench) -> None:
    """config.toml belongs to root and the app's group; a wrong group (or owner) is put right."""
    assert bench.install(*internet_flags()).returncode == 0
    config = bench.install_dir / "config.toml"
    os.chown(config, 0, 0)
    os.chown(bench.install_dir / "data" / "app", APP_UID, 0)
    assert bench.install(*internet_flags()).returncode == 0
    assert (config.stat().st_uid, config.stat().st_gid) == (0, APP_UID)
    app = (bench.install_dir / "data" / "app").stat()
    assert (app.st_uid, app.st_gid) == (APP_UID, APP_UID)


def test_failed_migrations_end_the_wait_at_once(bench: Bench) -> None:
    """A migrate container that exited non-zero can never become ready: the installer says so
    without waiting out --wait."""
    bench.configure(migrate_exit_code={"*": 3})
    started = time.monotonic()
    result = bench.install(*internet_flags(), "--wait", "60")
    assert result.returncode == 1
    assert "migrate (exited with 3: docker compose logs migrate)" in result.stderr
    assert time.monotonic() - started < 30


def test_site_settings_below_the_marker_survive_a_new_run(bench: Bench, tmp_path: Path) -> None:
    """config.toml ends with the site-settings line; what is below it (the Ansible role's
    repositories, a hand-made table) is kept byte for byte when another answer rewrites the
    rest, and the app accepts the result."""
    assert bench.install(*internet_flags()).returncode == 0
    config = bench.install_dir / "config.toml"
    assert config.read_text().splitlines()[-1] == SITE_MARKER
    mine = '\n[logging]\nlevel = "DEBUG"  # for a week\n\n' + ANSIBLE_BLOCK
    config.write_text(config.read_text() + mine)
    flags = internet_flags()
    flags[flags.index("Europe/Berlin")] = "America/New_York"
    result = bench.install(*flags)
    assert result.returncode == 0, result.stderr
    text = config.read_text()
    assert 'timezone = "America/New_York"' in text
    assert text.endswith(SITE_MARKER + "\n" + mine)
    settings = settings_from(bench.install_dir, tmp_path)
    assert [r.name for r in settings.backups.repositories] == ["local", "nas"]
    assert settings.logging.level == "DEBUG"
    before = snapshot(bench.install_dir)
    assert bench.install(*flags).returncode == 0
    assert snapshot(bench.install_dir) == before


def test_an_older_config_keeps_its_ansible_block(bench: Bench) -> None:
    """A config.toml from before the marker keeps the Ansible role's block (moved below the
    line) and the installer says where other hand edits went."""
    assert bench.install(*internet_flags()).returncode == 0
    config = bench.install_dir / "config.toml"
    old = config.read_text().replace(SITE_MARKER + "\n", "") + ANSIBLE_BLOCK
    config.write_text(old)
    result = bench.install(*internet_flags())
    assert result.returncode == 0, result.stderr
    assert config.read_text().endswith(SITE_MARKER + "\n" + ANSIBLE_BLOCK)
    assert "has no site-settings line" in result.stderr
    assert (bench.install_dir / "config.toml.bak").read_text() == old


def test_a_running_upgrade_or_install_locks_the_folder(bench: Bench) -> None:
    """While another run holds the folder's lock, the installer refuses and writes nothing."""
    assert bench.install(*internet_flags()).returncode == 0
    env_before = (bench.install_dir / ".env").read_bytes()
    flags = internet_flags()
    flags[flags.index("Europe/Berlin")] = "America/New_York"
    with (bench.install_dir / "upgrade" / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = bench.install(*flags)
    assert result.returncode == 1
    assert "another install or upgrade is running" in result.stderr
    assert (bench.install_dir / ".env").read_bytes() == env_before


def test_an_unfinished_upgrade_is_left_to_upgrade_sh(bench: Bench) -> None:
    """A state file from an interrupted upgrade stops the installer with what to run."""
    assert bench.install(*internet_flags()).returncode == 0
    (bench.install_dir / "upgrade" / "state").write_text("old=0.1.0\nnew=0.2.0\n")
    result = bench.install(*internet_flags())
    assert result.returncode == 1
    assert "did not finish" in result.stderr and "upgrade.sh" in result.stderr
