"""The Ansible deployment (ansible/): syntax, ansible-lint, yamllint, and our own rules of the role.

Our rules read the role's YAML: the firewall opens exactly SSH, HTTP and HTTPS, every command
says when it changes something, no secret sits in plain text in the examples, and the installer
runs without questions. Each rule is also shown to catch a deliberately broken copy. The backup
repository tasks run for real against a folder in tmp_path (nothing outside it is touched).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from appliance.config import load_settings

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
ROLE = ANSIBLE / "roles" / "fotostudio"
OPEN_PORTS = {("22", "tcp"), ("80", "tcp"), ("443", "tcp"), ("443", "udp")}
COMMAND_MODULES = {"command", "shell", "raw", "script"}
# Keys of a task that are not its module.
TASK_KEYWORDS = {
    "name", "when", "loop", "loop_control", "register", "notify", "listen", "tags", "vars",
    "become", "become_user", "changed_when", "failed_when", "check_mode", "no_log", "args",
    "delegate_to", "run_once", "environment", "ignore_errors", "until", "retries", "delay",
    "block", "rescue", "always", "with_items",
}  # fmt: skip
SECRET_NAME = re.compile(r"secret|password|passphrase|token|ssh_key|private", re.IGNORECASE)
VAULT_REFERENCE = re.compile(r"^\{\{\s*vault_\w+\s*\}\}$")
RANDOM_LOOKING = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9+/=_-]{32,}$")


def tool(name: str) -> str:
    """The tool's path; without it skip, unless CI is set (CI installs every tool)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (make tools-test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def ansible_env(tmp_path: Path) -> dict[str, str]:
    """Ansible's own temporary files under tmp_path, no colours, the repository's role path."""
    return {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible-remote"),
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_ROLES_PATH": str(ANSIBLE / "roles"),
    }


# --- our rules, each a function of an ansible/ folder --------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def role_tasks(role: Path) -> Iterator[dict[str, Any]]:
    """Every task and handler of the role, blocks opened up."""

    def walk(tasks: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for task in tasks:
            if "block" in task:
                for part in ("block", "rescue", "always"):
                    yield from walk(task.get(part) or [])
            else:
                yield task

    for folder in ("tasks", "handlers"):
        for path in sorted((role / folder).glob("*.yml")):
            yield from walk(load_yaml(path) or [])


def module_of(task: dict[str, Any]) -> tuple[str, Any]:
    """The task's module without its collection prefix, and its parameters."""
    (name,) = [key for key in task if key not in TASK_KEYWORDS]
    return name.rsplit(".", 1)[-1], task[name]


def role_variables(role: Path) -> dict[str, Any]:
    return {**load_yaml(role / "defaults" / "main.yml"), **load_yaml(role / "vars" / "main.yml")}


def render(value: Any, context: dict[str, Any]) -> str:
    """Ansible-style templating of one value, repeated until no template is left."""
    text = str(value)
    for _ in range(5):
        if "{{" not in text:
            break
        # Values of YAML variables, not HTML: nothing to escape.
        environment = jinja2.Environment(undefined=jinja2.StrictUndefined)  # noqa: S701
        text = environment.from_string(text).render(context)
    return text


def firewall_openings(role: Path) -> set[tuple[str, str]]:
    """(port, proto) of every ufw rule of the role that lets traffic in."""
    variables = role_variables(role)
    openings = set()
    for task in role_tasks(role):
        module, params = module_of(task)
        if module != "ufw" or params.get("rule") not in ("allow", "limit"):
            continue
        if params.get("direction", "in") not in ("in", "incoming"):
            continue
        loop = task.get("loop", [None])
        if isinstance(loop, str):  # "{{ a_variable }}" of the role
            variable = re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", loop)
            assert variable, f"loop {loop!r} is not one variable of the role"
            loop = variables[variable[1]]
        for item in loop:
            context = variables | {"item": item}
            port = render(params.get("port", "any"), context)
            openings.add((port, render(params.get("proto", "any"), context)))
    return openings


def denies_incoming_by_default(role: Path) -> bool:
    return any(
        module_of(task) == ("ufw", {"direction": "incoming", "default": "deny"})
        for task in role_tasks(role)
    )


def unguarded_commands(role: Path) -> list[str]:
    """Names of command/shell tasks that would report a change on every run."""
    found = []
    for task in role_tasks(role):
        module, params = module_of(task)
        if module not in COMMAND_MODULES or "changed_when" in task:
            continue
        args = {**(params if isinstance(params, dict) else {}), **task.get("args", {})}
        free_form = params if isinstance(params, str) else ""
        if not (
            {"creates", "removes"} & set(args) or re.search(r"\b(creates|removes)=", free_form)
        ):
            found.append(task.get("name", "(unnamed)"))
    return found


def installer_calls(role: Path) -> list[str]:
    """The command text of every task that runs installer/install.sh."""
    calls = []
    for task in role_tasks(role):
        module, params = module_of(task)
        text = json.dumps(params)
        if module in COMMAND_MODULES and "install.sh" in text:
            calls.append(text)
    return calls


def plaintext_secrets(files: list[Path]) -> list[str]:
    """Values in these YAML files that are secrets not taken from the vault."""
    found = []

    def walk(where: str, node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                walk(f"{where}.{name}", value, str(name))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(f"{where}[{index}]", value, key)
        elif (
            isinstance(node, str)
            and not VAULT_REFERENCE.match(node)
            and (SECRET_NAME.search(key) or RANDOM_LOOKING.match(node) or "-----BEGIN" in node)
        ):
            found.append(where)

    for path in files:
        walk(path.name, load_yaml(path))
    return found


def example_files(root: Path) -> list[Path]:
    return [root / "inventory.example.yml", *sorted((root / "examples").rglob("*.yml"))]


def broken_copy(tmp_path: Path, relative: str, old: str, new: str) -> Path:
    """A copy of ansible/ with one text replaced in one file (which must contain it once)."""
    copy = tmp_path / "ansible"
    shutil.copytree(ANSIBLE, copy)
    path = copy / relative
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{relative} no longer contains {old!r} once"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return copy


# --- the tools -------------------------------------------------------------------------------


def test_playbook_passes_the_syntax_check(tmp_path: Path) -> None:
    """ansible-playbook --syntax-check accepts site.yml with the example inventory."""
    result = subprocess.run(
        [tool("ansible-playbook"), "--syntax-check", "-i", "ansible/inventory.example.yml",
         "ansible/site.yml"],
        cwd=REPO, env=ansible_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "playbook: ansible/site.yml" in result.stdout


def test_ansible_lint_passes_the_production_profile(tmp_path: Path) -> None:
    """ansible-lint --offline with the production profile finds nothing (run on a copy)."""
    copy = tmp_path / "ansible"
    shutil.copytree(ANSIBLE, copy)
    result = subprocess.run(
        [tool("ansible-lint"), "--offline", "--nocolor", "--profile", "production"],
        cwd=copy, env=ansible_env(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "0 failure(s), 0 warning(s)" in output, output


def test_yamllint_is_clean(tmp_path: Path) -> None:
    """yamllint (strict, the folder's .yamllint) finds nothing in ansible/."""
    result = subprocess.run(
        [tool("yamllint"), "--strict", "."],
        cwd=ANSIBLE, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


# --- our rules on the real role, then on broken copies ----------------------------------------


def test_firewall_opens_exactly_ssh_http_and_https() -> None:
    """ufw lets in 22/tcp, 80/tcp, 443/tcp and 443/udp, nothing else, and denies the rest."""
    assert firewall_openings(ROLE) == OPEN_PORTS
    assert denies_incoming_by_default(ROLE)


def test_firewall_rule_catches_an_extra_port(tmp_path: Path) -> None:
    """A copy that also opens 8080 is reported."""
    copy = broken_copy(
        tmp_path, "roles/fotostudio/vars/main.yml",
        '  - {port: "80", proto: tcp, from_ip: any, comment: HTTP}\n',
        '  - {port: "80", proto: tcp, from_ip: any, comment: HTTP}\n'
        '  - {port: "8080", proto: tcp, from_ip: any, comment: admin}\n',
    )  # fmt: skip
    assert firewall_openings(copy / "roles" / "fotostudio") == OPEN_PORTS | {("8080", "tcp")}


def test_firewall_rule_follows_the_ssh_port_variable(tmp_path: Path) -> None:
    """The SSH opening is the fotostudio_ssh_port variable, so moving sshd moves the rule."""
    copy = broken_copy(
        tmp_path, "roles/fotostudio/defaults/main.yml",
        "fotostudio_ssh_port: 22\n", "fotostudio_ssh_port: 2222\n",
    )  # fmt: skip
    openings = firewall_openings(copy / "roles" / "fotostudio")
    assert openings == OPEN_PORTS - {("22", "tcp")} | {("2222", "tcp")}


def test_every_command_says_when_it_changes_something() -> None:
    """Each command/shell task has creates/removes or changed_when."""
    assert unguarded_commands(ROLE) == []
    assert len([t for t in role_tasks(ROLE) if module_of(t)[0] in COMMAND_MODULES]) >= 4


def test_command_rule_catches_a_command_without_changed_when(tmp_path: Path) -> None:
    """A copy whose gpg call lost changed_when is reported by name."""
    copy = broken_copy(
        tmp_path, "roles/fotostudio/tasks/docker.yml",
        "      register: fotostudio_docker_key\n      changed_when: false\n",
        "      register: fotostudio_docker_key\n",
    )  # fmt: skip
    assert unguarded_commands(copy / "roles" / "fotostudio") == ["Read the key's fingerprints"]


def test_examples_hold_no_plaintext_secret() -> None:
    """Every secret in the example inventory and group_vars is a vault variable."""
    files = example_files(ANSIBLE)
    assert len(files) >= 2
    assert plaintext_secrets(files) == []
    assert "vault_fotostudio_offsite_secret_key" in (ANSIBLE / "inventory.example.yml").read_text()


def test_secret_rule_catches_a_plaintext_key(tmp_path: Path) -> None:
    """A copy with the S3 secret written out is reported, with where it is."""
    copy = broken_copy(
        tmp_path, "inventory.example.yml",
        'secret_key: "{{ vault_fotostudio_offsite_secret_key }}"',
        'secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
    )  # fmt: skip
    found = plaintext_secrets(example_files(copy))
    assert found == [
        "inventory.example.yml.fotostudio.hosts.studio-server"
        ".fotostudio_backup_repositories[1].secret_key"
    ]


def test_installer_runs_without_questions() -> None:
    """The role runs install.sh once, with --non-interactive and --yes."""
    calls = installer_calls(ROLE)
    assert len(calls) == 1
    assert "--non-interactive" in calls[0]
    assert "--yes" in calls[0]


def test_installer_rule_catches_a_call_that_would_ask(tmp_path: Path) -> None:
    """A copy that dropped --non-interactive is reported."""
    copy = broken_copy(tmp_path, "roles/fotostudio/tasks/appliance.yml", "'--non-interactive',", "")
    calls = installer_calls(copy / "roles" / "fotostudio")
    assert len(calls) == 1
    assert "--non-interactive" not in calls[0]


# --- tasks of the role run for real on localhost, on files in tmp_path ----------------------


def run_role_tasks(
    tmp_path: Path, tasks_from: str, variables: dict[str, Any], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """ansible-playbook with only one task file of the role, on localhost, without facts."""
    playbook = tmp_path / f"{tasks_from}.yml"
    playbook.write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.include_role:\n        name: fotostudio\n"
        f"        tasks_from: {tasks_from}\n"
    )
    values = tmp_path / f"{tasks_from}-vars.json"
    values.write_text(json.dumps(variables))
    return subprocess.run(
        [tool("ansible-playbook"), "-i", "localhost,", "-e", f"@{values}", str(playbook)],
        env=ansible_env(tmp_path) | (env or {}), capture_output=True, text=True, timeout=180,
    )  # fmt: skip


# What `ufw allow` writes for the role's rules: "from any" once per file, with each family's
# any-address.
UFW_ROLE_RULES = {
    "user.rules": [
        "allow tcp 22 0.0.0.0/0 any {ssh_from} in comment=535348",
        "allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in comment=48545450",
        "allow tcp 443 0.0.0.0/0 any 0.0.0.0/0 in comment=4854545053",
        "allow udp 443 0.0.0.0/0 any 0.0.0.0/0 in comment=485454502f33",
    ],
    "user6.rules": [
        "allow tcp 80 ::/0 any ::/0 in comment=48545450",
        "allow tcp 443 ::/0 any ::/0 in comment=4854545053",
        "allow udp 443 ::/0 any ::/0 in comment=485454502f33",
    ],
}


def audit_firewall(
    tmp_path: Path, ssh_from: str, extra: list[str]
) -> subprocess.CompletedProcess[str]:
    """The role's strict firewall check on ufw rule files in tmp_path: the role's own rules for
    SSH from ``ssh_from`` plus ``extra`` tuples in user.rules."""
    ufw = tmp_path / "ufw"
    ufw.mkdir(exist_ok=True)
    for name, tuples in UFW_ROLE_RULES.items():
        lines = [line.format(ssh_from="0.0.0.0/0" if ssh_from == "any" else ssh_from)
                 for line in tuples]  # fmt: skip
        if name == "user6.rules" and ssh_from == "any":
            lines.append("allow tcp 22 ::/0 any ::/0 in comment=535348")
        if name == "user.rules":
            lines += extra
        body = "".join(f"\n### tuple ### {line}\n-A ufw-user-input -j ACCEPT\n" for line in lines)
        (ufw / name).write_text(f"*filter\n### RULES ###\n{body}\n### END RULES ###\nCOMMIT\n")
    return run_role_tasks(tmp_path, "firewall_audit", {
        "fotostudio_ufw_dir": str(ufw), "fotostudio_ssh_allow_from": ssh_from,
    })  # fmt: skip


@pytest.mark.parametrize(
    ("ssh_from", "extra", "reported"),
    [
        ("any", [], []),
        ("192.0.2.0/24", [], []),
        ("192.0.2.0/24", ["allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=535348"],
         ["allow tcp 22 0.0.0.0/0"]),
        ("any", ["allow_log tcp 8080 0.0.0.0/0 any 0.0.0.0/0 in",
                 "allow tcp 5432 0.0.0.0/0 any 0.0.0.0/0 in_eth1",
                 "limit tcp 22 0.0.0.0/0 any 0.0.0.0/0 OpenSSH - in",
                 "allow tcp 25 0.0.0.0/0 any 0.0.0.0/0 out"],
         ["allow tcp 8080 0.0.0.0/0", "allow tcp 5432 0.0.0.0/0", "limit tcp 22 0.0.0.0/0"]),
    ],
    ids=["role-only", "role-only-subnet", "ssh-from-any-left", "logged-interface-app"],
)  # fmt: skip
def test_strict_firewall_check_compares_the_source_too(
    tmp_path: Path, ssh_from: str, extra: list[str], reported: list[str]
) -> None:
    """The strict check passes on exactly the role's rules and names any other rule that lets
    traffic in: SSH still open from any after narrowing it, logged, interface-bound and
    application rules alike; outgoing rules are not its business."""
    result = audit_firewall(tmp_path, ssh_from, extra)
    if not reported:
        assert result.returncode == 0, result.stdout + result.stderr
        return
    assert result.returncode != 0
    message = " ".join(result.stdout.split())
    assert "ufw allows more than" in message
    for rule in reported:
        assert rule in message, message
    assert "tcp 25" not in message  # outgoing rules are not the check's business


def check_ssh_connection(
    tmp_path: Path, connection: str, port: int, allow_from: str
) -> subprocess.CompletedProcess[str]:
    """The role's SSH preflight with SSH_CONNECTION as sshd would set it for the play."""
    return run_role_tasks(
        tmp_path, "ssh_connection",
        {"fotostudio_ssh_port": port, "fotostudio_ssh_allow_from": allow_from},
        env={"SSH_CONNECTION": connection},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("connection", "port", "allow_from", "refusal"),
    [
        ("192.0.2.77 50022 192.0.2.5 22", 22, "192.0.2.0/24", None),
        ("::ffff:192.0.2.77 50022 ::ffff:192.0.2.5 22", 22, "192.0.2.0/24", None),
        ("", 2222, "192.0.2.0/24", None),
        ("203.0.113.9 50022 192.0.2.5 22", 22, "192.0.2.0/24", "from 203.0.113.9 on port 22"),
        ("203.0.113.9 50022 192.0.2.5 22", 2222, "any", "only let SSH in on port 2222"),
        ("192.0.2.77 50022 192.0.2.5 22", 22, "192.0.2.7/24", "(here: 192.0.2.0/24)"),
        ("192.0.2.77 50022 192.0.2.5 22", 22, "the office", "(such as 192.0.2.0/24)"),
    ],
    ids=["inside", "mapped-v4", "not-over-ssh", "outside", "other-port", "host-bits",
         "not-a-network"],
)  # fmt: skip
def test_preflight_refuses_a_firewall_that_would_cut_the_plays_ssh(
    tmp_path: Path, connection: str, port: int, allow_from: str, refusal: str | None
) -> None:
    """The play's own SSH connection must arrive on fotostudio_ssh_port from inside
    fotostudio_ssh_allow_from, written as ufw writes it; otherwise the play stops first."""
    result = check_ssh_connection(tmp_path, connection, port, allow_from)
    if refusal is None:
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        assert result.returncode != 0
        assert refusal in " ".join(result.stdout.split()), result.stdout


def test_docker_packages_update_the_cache_when_dockers_index_is_missing() -> None:
    """A retry after a failed apt update (docker.list unchanged, no Docker index yet) updates
    the cache again; with the index there and docker.list unchanged it does not."""
    packages = "{{ fotostudio_docker_packages }}"
    (task,) = [task for task in role_tasks(ROLE) if module_of(task)[0] == "apt"
               and module_of(task)[1].get("name") == packages]  # fmt: skip
    update = module_of(task)[1]["update_cache"]
    for changed, matched, expected in [(False, 0, "True"), (False, 1, "False"),
                                       (True, 1, "True")]:  # fmt: skip
        context = {
            "fotostudio_docker_repo": {"changed": changed},
            "fotostudio_docker_index": {"matched": matched},
        }
        assert render(update, context) == expected, (changed, matched)


# --- the backup repository tasks, run for real on a folder in tmp_path ---------------------

CONTRACT_CONFIG = """\
[server]
host = "0.0.0.0"
public_url = "https://{{SITE}}"
allowed_hosts = ["{{SITE}}"]
trusted_proxies = ["{{SUBNET}}"]
[database]
url_file = "/run/secrets/database_url"
[paths]
data_dir = "/var/lib/appliance"
[security]
secret_key_file = "/run/secrets/secret_key"
[storage]
backend = "s3"
endpoint = "http://minio:9000"
access_key = "fotostudio"
secret_key_file = "/run/secrets/storage_secret_key"
[backups]
password_file = "/run/secrets/restic_password"
timezone = "{{TZ}}"
[[backups.repositories]]
name = "local"
url = "/backup/repository"
[monitoring]
web_url = "http://web:8000"
metrics_token_file = "/run/secrets/metrics_token"
"""
INSTALLER_SECRETS = ("database_url", "secret_key", "storage_secret_key", "restic_password",
                     "metrics_token")  # fmt: skip
SITE_MARKER = (
    "# --- Site settings: everything below this line is kept when the installer runs again ---"
)
SITE_SETTING = "# The studio's own line, below the installer's.\n"
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA\n-----END OPENSSH PRIVATE KEY-----\n"
OFFSITE_SECRET = "bG9uZy1yYW5kb20tc2VjcmV0LWZvci10aGUtdGVzdA"


class InstallFolder:
    """An install folder as the installer leaves it, and runs of the role's backups tasks on it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.dir = tmp_path / "opt-fotostudio"
        self.nas = tmp_path / "nas"
        self.compose_log = tmp_path / "compose.log"
        (self.dir / "secrets").mkdir(parents=True, mode=0o700)
        self.nas.mkdir()
        template = REPO / "installer" / "templates" / "config.toml.in"
        text = template.read_text() if template.exists() else CONTRACT_CONFIG
        for name, value in (("SITE", "fotostudio.lan"), ("SUBNET", "172.30.40.0/24"),
                            ("CADDY_IP", "172.30.40.2"), ("TZ", "Europe/Berlin")):  # fmt: skip
            text = text.replace("{{" + name + "}}", value)
        assert not re.search(r"\{\{[A-Z_]+\}\}", text), "a placeholder of the installer is new here"
        if SITE_MARKER not in text:  # an installer from before the site-settings line
            text += SITE_MARKER + "\n"
        self.config = self.dir / "config.toml"
        self.config.write_text(text + SITE_SETTING)
        for name in INSTALLER_SECRETS:
            (self.dir / "secrets" / name).write_text(f"{name}-value-of-at-least-32-characters\n")
        (self.dir / "secrets" / "database_url").write_text("postgresql://a:b@postgres/appliance\n")
        # Stands in for `docker compose`: records what it is asked, and runs the real
        # `appliance check-config` on a staged config.toml handed to the container, with the
        # containers' secret paths mapped to the install folder's.
        self.compose = tmp_path / "compose-standin"
        checked = tmp_path / "checked.toml"
        self.compose.write_text(
            "#!/bin/sh\n"
            f'printf "%s\\n" "$*" >> "{self.compose_log}"\n'
            "staged=\n"
            'for arg; do case $arg in *:/etc/appliance/staged.toml:ro) '
            'staged=${arg%:/etc/appliance/staged.toml:ro} ;; esac; done\n'
            '[ -n "$staged" ] || exit 0\n'
            f'sed "s#/run/secrets/#{self.dir}/secrets/#g" "$staged" > "{checked}"\n'
            f'exec env -i PATH=/usr/bin:/bin HOME="{tmp_path}" "{sys.executable}" -m appliance'
            f' --config "{checked}" check-config\n'
        )  # fmt: skip
        self.compose.chmod(0o755)

    def repositories(self) -> list[dict[str, Any]]:
        return [
            {"name": "nas", "url": str(self.nas)},
            {"name": "offsite", "url": "s3:https://s3.example.com/studio/fotostudio",
             "region": "eu-central-1", "access_key": "studio-key", "secret_key": OFFSITE_SECRET},
            {"name": "studio", "url": "sftp:restic@backup.example.com:/srv/restic",
             "ssh_key": SSH_KEY,
             "known_hosts": "backup.example.com ssh-ed25519 AAAAC3Nza"},
        ]  # fmt: skip

    def run(self, repositories: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
        """ansible-playbook with only the role's backups tasks, on localhost."""
        return run_role_tasks(self.tmp, "backups", {
            "fotostudio_dir": str(self.dir),
            "fotostudio_backup_repositories": repositories,
            "fotostudio_app_uid": os.getuid(),
            "fotostudio_app_gid": os.getgid(),
            "fotostudio_compose": [str(self.compose)],
        })  # fmt: skip

    def settings_repositories(self) -> list[Any]:
        """The repositories the app reads from config.toml, container paths mapped to tmp_path."""
        text = self.config.read_text().replace("/run/secrets/", f"{self.dir}/secrets/")
        readable = self.tmp / "config-as-read.toml"
        readable.write_text(text)
        return list(load_settings(readable, environ={}).backups.repositories)

    def compose_calls(self) -> list[str]:
        return self.compose_log.read_text().splitlines() if self.compose_log.exists() else []


def changed_count(result: subprocess.CompletedProcess[str]) -> int:
    assert result.returncode == 0, result.stdout + result.stderr
    recap = re.search(r"localhost\s+: ok=\d+\s+changed=(\d+)", result.stdout)
    assert recap, result.stdout
    return int(recap[1])


def test_backup_repositories_reach_config_and_containers_once(tmp_path: Path) -> None:
    """A first run writes secrets, override and config block and restarts; a second does nothing."""
    folder = InstallFolder(tmp_path)
    original = folder.config.read_bytes()

    assert changed_count(folder.run(folder.repositories())) > 0
    repositories = folder.settings_repositories()
    assert [(r.name, r.offsite) for r in repositories] == [
        ("local", False), ("nas", True), ("offsite", True), ("studio", True)
    ]  # fmt: skip
    nas, offsite, studio = repositories[1:]
    assert nas.url == str(folder.nas)
    assert (offsite.access_key, offsite.secret_key, offsite.region) == (
        "studio-key", OFFSITE_SECRET, "eu-central-1"
    )  # fmt: skip
    in_container = f"{folder.dir}/secrets"  # /run/secrets, as mapped for reading here
    assert studio.options == [
        f"sftp.args=-i {in_container}/backup_studio_ssh_key"
        f" -o UserKnownHostsFile={in_container}/backup_studio_known_hosts"
        " -o StrictHostKeyChecking=yes -o BatchMode=yes"
    ]
    secrets = sorted(p.name for p in (folder.dir / "secrets").glob("backup_*"))
    assert secrets == ["backup_offsite_secret_key", "backup_studio_known_hosts",
                       "backup_studio_ssh_key"]  # fmt: skip
    for name in secrets:
        assert stat.S_IMODE((folder.dir / "secrets" / name).stat().st_mode) == 0o600
    assert (folder.dir / "secrets" / "backup_studio_ssh_key").read_text() == SSH_KEY
    assert OFFSITE_SECRET not in folder.config.read_text()
    override = load_yaml(folder.dir / "docker-compose.override.yml")
    for service in ("web", "worker", "migrate"):
        assert sorted(override["services"][service]["secrets"]) == secrets
    assert override["secrets"]["backup_offsite_secret_key"] == {
        "file": "${APPLIANCE_DIR}/secrets/backup_offsite_secret_key"
    }
    assert override["services"]["worker"]["volumes"] == [{
        "type": "bind", "source": str(folder.nas), "target": str(folder.nas),
        "bind": {"create_host_path": False},
    }]  # fmt: skip
    # Only the worker runs restic: the web server never gets the NAS folders, not even read-only.
    assert "volumes" not in override["services"]["migrate"]
    assert "volumes" not in override["services"]["web"]
    text = folder.config.read_text()
    assert text.index(SITE_MARKER) < text.index(SITE_SETTING) < text.index("# BEGIN extra backup")
    assert not (folder.dir / "config.toml.staged").exists()
    staged_check, settings_check, restart = folder.compose_calls()
    assert "--config /etc/appliance/staged.toml check-config" in staged_check
    assert settings_check.split()[:2] == ["run", "--rm"]
    assert restart.split()[:2] == ["up", "--detach"]

    assert changed_count(folder.run(folder.repositories())) == 0
    assert len(folder.compose_calls()) == 3  # no check and no restart without a change

    assert changed_count(folder.run([])) > 0
    assert folder.config.read_bytes() == original
    assert not (folder.dir / "docker-compose.override.yml").exists()
    assert len(folder.compose_calls()) == 6


def test_backup_repository_on_a_missing_nas_folder_is_refused(tmp_path: Path) -> None:
    """A NAS path that is not there (not mounted) stops the play before anything is written."""
    folder = InstallFolder(tmp_path)
    original = folder.config.read_bytes()
    result = folder.run([{"name": "nas", "url": str(tmp_path / "not-mounted")}])
    assert result.returncode != 0
    assert "mount the NAS there first" in result.stdout
    assert folder.config.read_bytes() == original
    assert not (folder.dir / "docker-compose.override.yml").exists()


def test_a_repository_the_app_refuses_never_reaches_config_toml(tmp_path: Path) -> None:
    """A block that check-config refuses (a name the studio already gave a repository below the
    site-settings line) fails the play and leaves config.toml as it was, without restarts."""
    folder = InstallFolder(tmp_path)
    with folder.config.open("a") as config:
        config.write('[[backups.repositories]]\nname = "nas"\nurl = "/srv/nas"\noffsite = true\n')
    original = folder.config.read_bytes()
    result = folder.run([{"name": "nas", "url": str(folder.nas)}])
    assert result.returncode != 0
    assert "backups.repositories.nas: two repositories have this name" in result.stdout
    assert folder.config.read_bytes() == original
    assert not (folder.dir / "config.toml.staged").exists()
    assert [call.split()[-1] for call in folder.compose_calls()] == ["check-config"]
    assert not any(call.startswith("up ") for call in folder.compose_calls())


# --- templates, rendered by Ansible itself --------------------------------------------------

DEBIAN_DEFAULTS = """\
Unattended-Upgrade::Origins-Pattern {
        "origin=Debian,codename=${distro_codename},label=Debian";
        "origin=Debian,codename=${distro_codename}-security,label=Debian-Security";
};
"""


def render_template(tmp_path: Path, template: str, variables: dict[str, Any]) -> str:
    """The role's template as Ansible renders it with these variables."""
    dest = tmp_path / f"rendered-{len(list(tmp_path.glob('rendered-*')))}"
    playbook = tmp_path / "render.yml"
    playbook.write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
        f"    - ansible.builtin.template:\n        src: {ROLE / 'templates' / template}\n"
        f"        dest: {dest}\n        mode: '0644'\n"
    )
    (tmp_path / "render-vars.json").write_text(json.dumps(variables))
    result = subprocess.run(
        [tool("ansible-playbook"), "-i", "localhost,", "-e", f"@{ROLE / 'defaults' / 'main.yml'}",
         "-e", f"@{tmp_path / 'render-vars.json'}", str(playbook)],
        env=ansible_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return dest.read_text()


@pytest.mark.parametrize(
    ("distribution", "security_origins"),
    [
        ("Debian", ["origin=Debian,codename=${distro_codename}-security,label=Debian-Security"]),
        ("Ubuntu", ["origin=Ubuntu,archive=${distro_codename}-security",
                    "origin=UbuntuESMApps,archive=${distro_codename}-apps-security",
                    "origin=UbuntuESM,archive=${distro_codename}-infra-security"]),
    ],
)  # fmt: skip
def test_unattended_upgrades_take_only_security_updates(
    tmp_path: Path, distribution: str, security_origins: list[str]
) -> None:
    """Read after the distribution's list, apt sees only security origins and no auto-reboot."""
    apt_config = tool("apt-config")
    ours = tmp_path / "52fotostudio-unattended-upgrades"
    ours.write_text(
        render_template(
            tmp_path, "52fotostudio-unattended-upgrades.j2", {"ansible_distribution": distribution}
        )
    )
    theirs = tmp_path / "50unattended-upgrades"
    theirs.write_text(DEBIAN_DEFAULTS)
    dump = subprocess.run(
        [apt_config, "-c", str(theirs), "-c", str(ours), "dump"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    origins = re.findall(r'^Unattended-Upgrade::Origins-Pattern:: "(.*)";$', dump, re.MULTILINE)
    assert origins == security_origins
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in dump.splitlines()


def test_compose_override_merges_into_the_bundle(tmp_path: Path) -> None:
    """Over the real bundle, web, worker and migrate get the secrets; web and worker the NAS."""
    jsonschema = pytest.importorskip("jsonschema")
    schema_path = REPO / ".tools" / "compose-spec.json"
    compose = REPO / ".tools" / "bin" / "docker-compose"
    if not (schema_path.exists() and compose.exists()):
        if os.environ.get("CI"):
            pytest.fail("docker-compose or its schema is missing in .tools (make tools-test)")
        pytest.skip("docker-compose or its schema is missing in .tools (make tools-test)")
    folder = InstallFolder(tmp_path)
    text = render_template(
        tmp_path, "docker-compose.override.yml.j2",
        {"fotostudio_backup_repositories": folder.repositories()},
    )  # fmt: skip
    override = yaml.safe_load(text)
    jsonschema.Draft7Validator(json.loads(schema_path.read_text())).validate(override)
    (folder.dir / "docker-compose.override.yml").write_text(text)
    (folder.dir / ".env").write_text(
        f"APPLIANCE_VERSION=0.1.0\nAPPLIANCE_SITE=fotostudio.lan\nAPPLIANCE_TLS=lan\n"
        f"APPLIANCE_DIR={folder.dir}\nAPPLIANCE_SUBNET=172.30.40.0/24\nTZ=Europe/Berlin\n"
    )
    shutil.copytree(REPO / "compose", folder.dir / "compose")
    result = subprocess.run(
        [str(compose), "--project-name", "fotostudio", "--env-file", str(folder.dir / ".env"),
         "--file", str(folder.dir / "compose" / "docker-compose.yml"),
         "--file", str(folder.dir / "docker-compose.override.yml"), "config", "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    ours = {"backup_offsite_secret_key", "backup_studio_ssh_key", "backup_studio_known_hosts"}
    for name in ("web", "worker", "migrate"):
        mounted = {secret["source"] for secret in services[name]["secrets"]}
        assert ours <= mounted, name
        assert "database_url" in mounted, name  # the bundle's own are kept
    nas = [v for v in services["worker"]["volumes"] if v["target"] == str(folder.nas)]
    assert [(v["type"], v["source"]) for v in nas] == [("bind", str(folder.nas))]
    assert not nas[0]["bind"].get("create_host_path")  # never made on the system disk
    assert str(folder.nas) not in json.dumps(services["migrate"])
    assert str(folder.nas) not in json.dumps(services["web"])
    assert set(override["services"]) == {"web", "worker", "migrate"}
