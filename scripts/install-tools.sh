#!/usr/bin/env bash
# Install the system tools the appliance and its tests need, from Debian's package archive:
#   restic >= 0.18 (Debian 12 ships 0.14, which lacks --stdin-from-command), into .tools/bin;
#   chromium, shellcheck and heif-enc, for the tests (only with --test).
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

install_restic() {
  mkdir -p "$bin"
  if [ -x "$bin/restic" ] && restic_ok "$bin/restic"; then return 0; fi
  if command -v restic >/dev/null 2>&1 && restic_ok "$(command -v restic)"; then
    ln -sf "$(command -v restic)" "$bin/restic"; return 0
  fi
  echo "installing restic 0.18 from Debian trixie into .tools/bin" >&2
  local tmp; tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  mkdir -p "$tmp/lists/partial"
  echo 'deb http://deb.debian.org/debian trixie main' > "$tmp/sources.list"
  local opts=(-o "Dir::Etc::sourcelist=$tmp/sources.list" -o Dir::Etc::sourceparts=-
              -o "Dir::State::Lists=$tmp/lists" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  apt-get "${opts[@]}" -qq update
  (cd "$tmp" && apt-get "${opts[@]}" -qq download restic)
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
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing ${missing[*]} from Debian" >&2
  as_root apt-get -qq update
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

install_restic
[ "$want_browser" -eq 1 ] && install_test_tools
echo "tools ready: restic $("$bin/restic" version | awk '{print $2}')$([ "$want_browser" -eq 1 ] && echo ", $(chromium --version 2>/dev/null)")"
