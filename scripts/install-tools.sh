#!/usr/bin/env bash
# Install the system tools the appliance and its tests need, from Debian's package archive:
#   restic >= 0.18 (Debian 12 ships 0.14, which lacks --stdin-from-command), into .tools/bin;
#   chromium, shellcheck, heif-enc, ansible, ansible-lint and yamllint, for the tests, and
#   Docker Compose v2 (Debian trixie's docker-compose) into .tools/bin with the Compose
#   specification's JSON schema taken out of it into .tools/compose-spec.json, so the bundle is
#   validated without a Docker engine (only with --test).
# Idempotent: anything already present is left alone. Needs root (or sudo) for apt.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/.tools/bin"
want_browser=0
for arg in "$@"; do
  case "$arg" in
    --test) want_browser=1 ;;
    *) echo "usage: $0 [--test]" >&2; exit 2 ;;
  esac
done

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "need root to run: $*" >&2; return 1
  fi
}

restic_ok() {
  local exe=$1 version
  version=$("$exe" version 2>/dev/null | awk '{print $2}') || return 1
  [ -n "$version" ] || return 1
  # 0.18 or newer
  [ "$(printf '%s\n0.18.0\n' "$version" | sort -V | head -n1)" = "0.18.0" ]
}

# Fetch one package from Debian trixie into $tmp without touching the system's apt state.
trixie_download() {
  local tmp=$1 package=$2
  mkdir -p "$tmp/lists/partial"
  echo 'deb http://deb.debian.org/debian trixie main' > "$tmp/sources.list"
  local opts=(-o "Dir::Etc::sourcelist=$tmp/sources.list" -o Dir::Etc::sourceparts=-
              -o "Dir::State::Lists=$tmp/lists" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  [ -f "$tmp/lists/.updated" ] || { apt-get "${opts[@]}" -qq update && touch "$tmp/lists/.updated"; }
  (cd "$tmp" && apt-get "${opts[@]}" -qq download "$package")
}

install_restic() {
  mkdir -p "$bin"
  if [ -x "$bin/restic" ] && restic_ok "$bin/restic"; then return 0; fi
  if command -v restic >/dev/null 2>&1 && restic_ok "$(command -v restic)"; then
    ln -sf "$(command -v restic)" "$bin/restic"; return 0
  fi
  echo "installing restic 0.18 from Debian trixie into .tools/bin" >&2
  local tmp; tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  trixie_download "$tmp" restic
  dpkg -x "$tmp"/restic_*.deb "$tmp/x"
  install -m 0755 "$tmp/x/usr/bin/restic" "$bin/restic"
  restic_ok "$bin/restic"
}

install_test_tools() {
  local missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
  # heif-enc makes the HEVC-coded HEIC photos (as iPhones take them) the tests upload.
  command -v heif-enc >/dev/null 2>&1 || missing+=(libheif-examples)
  # The Ansible deployment is checked with ansible-playbook --syntax-check and ansible-lint.
  command -v ansible-playbook >/dev/null 2>&1 || missing+=(ansible)
  command -v ansible-lint >/dev/null 2>&1 || missing+=(ansible-lint)
  command -v yamllint >/dev/null 2>&1 || missing+=(yamllint)
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing ${missing[*]} from Debian" >&2
  as_root apt-get -qq update
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Compose v2 validates a compose file against the specification offline (`config -q`); the
# schema it embeds is the specification's JSON schema, written out for the tests' own checks.
install_compose() {
  mkdir -p "$bin"
  if [ -x "$bin/docker-compose" ] && [ -s "$here/.tools/compose-spec.json" ]; then return 0; fi
  echo "installing Docker Compose v2 from Debian trixie into .tools/bin" >&2
  local tmp; tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  trixie_download "$tmp" docker-compose
  dpkg -x "$tmp"/docker-compose_*.deb "$tmp/x"
  install -m 0755 "$tmp/x/usr/libexec/docker/cli-plugins/docker-compose" "$bin/docker-compose"
  python3 - "$bin/docker-compose" "$here/.tools/compose-spec.json" <<'PY'
import json, re, sys
blob = open(sys.argv[1], "rb").read()
decoder = json.JSONDecoder()
for match in re.finditer(rb'"\$id":\s*"compose_spec.json"', blob):
    start = blob.rfind(b"{", 0, match.start())  # "$schema" comes first and holds no brace
    try:
        schema, _ = decoder.raw_decode(blob[start:start + 500_000].decode("utf-8", "replace"))
    except ValueError:
        continue
    if schema.get("title") == "Compose Specification":
        json.dump(schema, open(sys.argv[2], "w"), indent=1)
        break
else:
    sys.exit("the Compose specification's schema was not found in docker-compose")
PY
}

install_restic
[ "$want_browser" -eq 1 ] && install_test_tools && install_compose
echo "tools ready: restic $("$bin/restic" version | awk '{print $2}')$([ "$want_browser" -eq 1 ] && echo ", $(chromium --version 2>/dev/null)")"
