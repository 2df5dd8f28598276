#!/usr/bin/env bash
# Upgrade an installed appliance to the release this script belongs to. Only when the last
# backup and restore drill passed (appliance upgrade-check); first a fresh recovery point and
# a database dump; then the new image, the new compose files, migrations and a health check.
# When any of that fails, the previous image, compose files and database come back.
# docs/upgrade.md explains every step and what to do when even the rollback fails.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCE=$(dirname "$HERE")
# shellcheck source=installer/lib.sh
source "$HERE/lib.sh"

readonly EXIT_REFUSED=3 EXIT_ROLLED_BACK=4 EXIT_BROKEN=5

usage() {
  cat <<EOF
Usage: sudo bash installer/upgrade.sh [--dir PATH] [--force] [--wait SECONDS]

Upgrades the appliance installed in PATH (default /opt/fotostudio) to the version of the
release this script belongs to.

Options:
  --dir PATH       the install folder (default /opt/fotostudio)
  --force          upgrade even when appliance upgrade-check fails or no recovery point can
                   be made (the database dump still allows a rollback)
  --wait SECONDS   how long to wait for the services to be healthy (default 300)
  -h, --help       this text

Exit status:
  0  upgraded, or already at this version
  1  a check or a step before the switch failed: nothing was changed
  2  wrong usage
  3  refused: the last backup or restore drill did not pass (see appliance upgrade-check)
  4  the upgrade failed and was rolled back: the previous version runs on the previous data
  5  the upgrade failed and so did the rollback: follow docs/upgrade.md by hand
EOF
}

DIR=/opt/fotostudio FORCE=0 WAIT=300

parse_args() {
  while (($#)); do
    case $1 in
      --dir | --wait)
        (($# >= 2)) || die "$1 needs a value (see --help)" 2
        if [[ $1 == --dir ]]; then DIR=${2%/}; else WAIT=$2; fi
        shift 2
        ;;
      --force) FORCE=1 && shift ;;
      -h | --help) usage && exit 0 ;;
      *) die "unknown option $1 (see --help)" 2 ;;
    esac
  done
  [[ $WAIT =~ ^[1-9][0-9]{0,4}$ ]] || die "--wait takes a number of seconds" 2
}

# The gate: an upgrade is only as safe as the last backup known to restore.
check_gate() {
  local out
  if out=$(dc exec -T worker appliance upgrade-check 2>&1); then
    say "$out"
    return 0
  fi
  if ((FORCE)); then
    warn "upgrading anyway (--force), although: ${out//$'\n'/ }"
    return 0
  fi
  printf '%s\n' "$out" >&2
  die "not upgrading: appliance upgrade-check did not pass (its reasons are above; if the worker does not run, start the appliance first). Fix: see Admin → Backups, run appliance backup and appliance drill in the worker, then run this again (or use --force)." "$EXIT_REFUSED"
}

take_recovery_point() {
  say "Taking a recovery point (appliance backup)..."
  dc exec -T worker appliance backup && return 0
  ((FORCE)) || die "no recovery point could be made (see above); nothing was changed. Fix the backup, or use --force to rely on the database dump alone."
  warn "no recovery point was made; going on with the database dump alone (--force)"
}

# dump_database: DUMP becomes a pg_dump of the running version's database, for a rollback.
dump_database() {
  ensure_dir "$DIR/upgrade" 0700 0
  DUMP="$DIR/upgrade/fotostudio-$OLD-$(date -u +%Y%m%dT%H%M%SZ).dump"
  say "Dumping the database to $DUMP..."
  if ! dc exec -T postgres pg_dump --username appliance --dbname appliance --format custom \
    >"$DUMP.partial" || [[ ! -s $DUMP.partial ]]; then
    rm -f "$DUMP.partial"
    die "the database could not be dumped (see above); nothing was changed."
  fi
  mv "$DUMP.partial" "$DUMP"
}

# set_version VERSION: APPLIANCE_VERSION in .env, every other line as it was.
set_version() {
  local line lines=()
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line == APPLIANCE_VERSION=* ]] && line="APPLIANCE_VERSION=$1"
    lines+=("$line")
  done <"$DIR/.env"
  put_file "$DIR/.env" 0600 0 0 < <(printf '%s\n' "${lines[@]}")
  rm -f "$DIR/.env.bak" # .env.previous is the copy that counts
}

# switch: from the moment the compose files change, every failure returns 1 (and is rolled
# back by the caller); errexit does not apply inside a function called from a condition.
switch() {
  cp -p "$DIR/.env" "$DIR/.env.previous"
  sync_compose previous || return 1
  set_version "$NEW" || return 1
  say "Stopping the web server and the worker..."
  dc stop web worker || return 1
  say "Applying the database migrations of $NEW..."
  dc run --rm -T migrate || {
    FAILED="the migrations failed"
    return 1
  }
  dc up -d --remove-orphans || {
    FAILED="the new services did not start"
    return 1
  }
  wait_healthy "$WAIT" || {
    FAILED="the new services were not healthy within $WAIT s"
    return 1
  }
}

restore_database() {
  dc exec -T postgres dropdb --username appliance --if-exists --force appliance &&
    dc exec -T postgres createdb --username appliance --owner appliance appliance &&
    dc_with_stdin exec -T postgres pg_restore --username appliance --dbname appliance \
      --exit-on-error <"$DUMP"
}

# rollback: the previous compose files and .env (so the previous image tag), the database as
# dumped before the switch, and the previous services; never stops half-way on an error.
rollback() {
  local broken=()
  warn "$FAILED; rolling back to $OLD"
  dc stop web worker || broken+=("stopping the new web server and worker")
  if [[ -d $DIR/compose.previous ]]; then
    rm -rf "$DIR/compose.failed"
    mv "$DIR/compose" "$DIR/compose.failed" && mv "$DIR/compose.previous" "$DIR/compose" ||
      broken+=("restoring $DIR/compose from compose.previous")
  fi
  cp -p "$DIR/.env.previous" "$DIR/.env" || broken+=("restoring $DIR/.env from .env.previous")
  restore_database || broken+=("restoring the database from $DUMP")
  dc up -d --remove-orphans || broken+=("starting $OLD again")
  if ((${#broken[@]} == 0)) && wait_healthy "$WAIT"; then
    die "upgrade to $NEW failed ($FAILED); rolled back to $OLD with the database as it was before (from $DUMP). The new compose files are in $DIR/compose.failed." "$EXIT_ROLLED_BACK"
  fi
  ((${#broken[@]})) || broken+=("$OLD did not become healthy again")
  die "upgrade to $NEW failed ($FAILED) and the rollback failed too: ${broken[*]}. Follow \"When the rollback fails\" in docs/upgrade.md; the dump is $DUMP." "$EXIT_BROKEN"
}

main() {
  umask 077 # the dump holds every client's data
  parse_args "$@"
  check_linux
  check_root
  check_docker
  [[ -f $DIR/.env ]] || die "no appliance is installed in $DIR (no .env). Fix: pass --dir, or install with installer/install.sh."
  OLD=$(env_value APPLIANCE_VERSION) || die "$DIR/.env names no APPLIANCE_VERSION"
  NEW=$(source_version)
  if [[ $OLD == "$NEW" ]]; then
    say "The appliance in $DIR runs $NEW already: nothing to do."
    exit 0
  fi
  version_at_least "$NEW" "$OLD" ||
    die "$DIR runs $OLD, newer than $NEW: migrations only go forward. To go back, restore a recovery point (docs/backup-restore.md)."
  say "Upgrading the appliance in $DIR from $OLD to $NEW."
  check_gate
  take_recovery_point
  dump_database
  say "Building the image $IMAGE:$NEW..."
  dc_build "$NEW" || die "building the image failed (see above); nothing was changed, $OLD still runs."
  FAILED="the switch to $NEW failed"
  switch || rollback
  rm -rf "$DIR/compose.previous"
  say "Upgraded from $OLD to $NEW. The dump taken before, $DUMP, can be deleted once all is well."
}

main "$@"
