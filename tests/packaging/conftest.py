"""The installer and the upgrade script, run for real against the stand-in ``docker``.

A test builds a release folder (the repository's installer/, a small compose/ and a
pyproject.toml naming the version) and runs its scripts with bash, the stand-in first on PATH
and the documented test overrides (``FOTOSTUDIO_*``) pointing at temporary files.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).resolve().parent / "standin"
SECRET_NAMES = [
    "postgres_password",
    "database_url",
    "minio_root_password",
    "storage_secret_key",
    "secret_key",
    "restic_password",
    "metrics_token",
]
PUBLIC_IP = "203.0.113.10"


def make_release(folder: Path, version: str, compose_note: str = "") -> Path:
    """A release as the scripts expect it: installer/, compose/ and pyproject.toml."""
    shutil.copytree(REPOSITORY / "installer", folder / "installer")
    (folder / "compose").mkdir(parents=True)
    (folder / "compose" / "docker-compose.yml").write_text(
        f"# the bundle of release {version}{compose_note}\nname: fotostudio\n"
    )
    (folder / "compose" / "Caddyfile").write_text(f"# Caddyfile of release {version}\n")
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "fotostudio-appliance"\nversion = "{version}"\n'
    )
    return folder


@dataclass
class Bench:
    """One machine: the stand-in's folder, the environment, the install folder."""

    root: Path
    env: dict[str, str]
    install_dir: Path
    releases: dict[str, Path] = field(default_factory=dict)

    @property
    def standin_dir(self) -> Path:
        return Path(self.env["DOCKER_STANDIN_DIR"])

    def configure(self, **answers: Any) -> None:
        """Change how the stand-in answers (see docker_standin.py)."""
        path = self.standin_dir / "config.json"
        current = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**current, **answers}))

    def release(self, version: str) -> Path:
        if version not in self.releases:
            self.releases[version] = make_release(self.root / f"release-{version}", version)
        return self.releases[version]

    def run(
        self, script: str, *args: str, version: str = "0.1.0", stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(self.release(version) / "installer" / script), *args],
            input=stdin,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def install(self, *extra: str, version: str = "0.1.0") -> subprocess.CompletedProcess[str]:
        """install.sh with every answer as a flag."""
        return self.run(
            "install.sh",
            "--non-interactive",
            "--yes",
            "--dir",
            str(self.install_dir),
            *extra,
            version=version,
        )

    def calls(self) -> list[dict[str, Any]]:
        log = self.standin_dir / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def compose_commands(self) -> list[str]:
        """The compose sub-commands called so far, with their service and command."""
        found = []
        for call in self.calls():
            argv = call["argv"]
            if argv[:1] != ["compose"] or argv[1:2] == ["version"]:
                continue
            words = [a for a in argv[1:] if not a.startswith("-")]
            # drop the values of the global options (project name, env file, compose file)
            found.append(" ".join(w for w in words if w not in _option_values(argv)))
        return found

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.standin_dir / "state.json").read_text())
        return data

    def forget_calls(self) -> None:
        (self.standin_dir / "calls.jsonl").unlink(missing_ok=True)


def _option_values(argv: list[str]) -> set[str]:
    options = {"--project-name", "--env-file", "--file", "-p", "-f", "--format"}
    return {argv[i + 1] for i, a in enumerate(argv[:-1]) if a in options}


@pytest.fixture(scope="session")
def root_certificate(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real self-signed certificate, as Caddy's local CA would write it."""
    folder = tmp_path_factory.mktemp("ca")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=Caddy Local Authority",
            "-days",
            "1",
            "-keyout",
            str(folder / "key.pem"),
            "-out",
            str(folder / "root.crt"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return (folder / "root.crt").read_bytes()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def bench(tmp_path: Path, root_certificate: bytes) -> Iterator[Bench]:
    standin_dir = tmp_path / "engine"
    standin_dir.mkdir()
    (standin_dir / "root.crt").write_bytes(root_certificate)
    hosts = tmp_path / "hosts"
    hosts.write_text(f"# test resolver\n{PUBLIC_IP} photos.example.com www.example.com\n")
    env = {
        **os.environ,
        "PATH": f"{STANDIN}{os.pathsep}{os.environ['PATH']}",
        "DOCKER_STANDIN_DIR": str(standin_dir),
        "DOCKER_STANDIN_PYTHON": sys.executable,
        "FOTOSTUDIO_ALLOW_NON_ROOT": "1",
        "FOTOSTUDIO_HOSTS_FILE": str(hosts),
        "FOTOSTUDIO_PORTS": str(free_port()),
        "FOTOSTUDIO_MIN_DISK_GB": "1",
    }
    yield Bench(root=tmp_path, env=env, install_dir=tmp_path / "fotostudio")


def internet_flags(public_ip: str | None = PUBLIC_IP) -> list[str]:
    """install.sh's answers for photos.example.com, which the test resolver points at
    PUBLIC_IP; without ``public_ip`` that is not an address of this machine."""
    flags = ["--mode", "internet", "--domain", "photos.example.com"]
    flags += ["--email", "it@example.com", "--timezone", "Europe/Berlin"]
    return flags + (["--public-ip", public_ip] if public_ip else [])
