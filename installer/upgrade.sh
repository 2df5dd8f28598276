#!/usr/bin/env bash
# Upgrade an installed appliance to the release this script belongs to. Only when the last
# backup and restore drill passed (appliance upgrade-check); a fresh recovery point, the new
# image built and shown config.toml while the old version still serves; then web and worker
# stop, the database is dumped, and the new compose files, migrations and a health check
# follow. When any of that fails or the script is interrupted, the previous image, compose
# files and (once migrations ran) database come back. $DIR/upgrade/state records how far it
# got, so a run after a crash finishes the rollback. docs/upgrade.md explains every step.
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
  0  upgraded, or already at this version and healthy
  1  a check or a step before the switch failed, or it was interrupted there: nothing was
     changed and the installed version runs
  2  wrong usage
  3  refused: the last backup or restore drill did not pass (see appliance upgrade-check)
  4  the upgrade failed, was interrupted, or an earlier interrupted one was found: it was
     rolled back and the previous version runs on the previous data
  5  the upgrade failed and so did the rollback: run this again to retry the rollback, or
     follow docs/upgrade.md by hand
EOF
}

DIR=/opt/fotostudio FORCE=0 WAIT=300
# Where the upgrade has got to (the state file's phase): stopping, dumped, switching,
# migrating, starting. Each is written before its step begins, so a rollback knows the most
# that may have happened.
OLD="" NEW="" DUMP="" PHASE="" STATE=""

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

# write_state PHASE: record OLD, NEW, DUMP and PHASE in $STATE, whole or not at all.
write_state() {
  PHASE=$1
  printf 'old=%s\nnew=%s\ndump=%s\nphase=%s\n' "$OLD" "$NEW" "$DUMP" "$PHASE" >"$STATE.partial" &&
    mv "$STATE.partial" "$STATE"
}

# stop_and_dump: web and worker stop first, so no write made after the dump is lost by a
# rollback; then DUMP becomes a pg_dump of the running version's database.
stop_and_dump() {
  write_state stopping || return 1
  say "Stopping the web server and the worker, so that nothing is written after the dump..."
  dc stop web worker || {
    FAILED="the web server and the worker could not be stopped"
    return 1
  }
  DUMP="$DIR/upgrade/fotostudio-$OLD-$(date -u +%Y%m%dT%H%M%SZ).dump"
  say "Dumping the database to $DUMP..."
  if ! dc exec -T postgres pg_dump --username appliance --dbname appliance --format custom \
    >"$DUMP.partial" || [[ ! -s $DUMP.partial ]]; then
    rm -f "$DUMP.partial"
    FAILED="the database could not be dumped"
    return 1
  fi
  mv "$DUMP.partial" "$DUMP" && write_state dumped
}

# set_version VERSION: APPLIANCE_VERSION in .env, every other line as it was.
set_version() {
  local line lines=()
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line == APPLIANCE_VERSION=* ]] && line="APPLIANCE_VERSION=$1"
    lines+=("$line")
  done <"$DIR/.env"
  put_file "$DIR/.env" 0600 0 0 < <(printf '%s\n' "${lines[@]}") || return 1
  rm -f "$DIR/.env.bak" # .env.previous is the copy that counts
}

# switch: the new compose files and version, the migrations, the new services. Every step is
# checked (errexit does not apply inside a function called from a condition); a failure
# returns 1 and the caller rolls back.
switch() {
  write_state switching || return 1
  cp -p "$DIR/.env" "$DIR/.env.previous.partial" &&
    mv "$DIR/.env.previous.partial" "$DIR/.env.previous" || return 1
  sync_compose previous || return 1
  set_version "$NEW" || return 1
  write_state migrating || return 1
  say "Applying the database migrations of $NEW..."
  dc run --rm -T migrate || {
    FAILED="the migrations failed"
    return 1
  }
  write_state starting || return 1
  dc up -d --remove-orphans || {
    FAILED="the new services did not start"
    return 1
  }
  wait_healthy "$WAIT" || {
    FAILED="the new services were not healthy within $WAIT s"
    return 1
  }
}

# restore_files: the previous compose/ (the new one kept as compose.failed) and .env.
restore_files() {
  if [[ -d $DIR/compose.previous ]]; then
    rm -rf "$DIR/compose.failed" || return 1
    # Missing when the run ended inside sync_compose, between its two renames.
    if [[ -d $DIR/compose ]]; then mv "$DIR/compose" "$DIR/compose.failed" || return 1; fi
    mv "$DIR/compose.previous" "$DIR/compose" || return 1
  fi
  if [[ -f $DIR/.env.previous ]]; then
    cp -p "$DIR/.env.previous" "$DIR/.env.partial" && mv "$DIR/.env.partial" "$DIR/.env" &&
      rm -f "$DIR/.env.previous"
  fi
}

restore_database() {
  dc exec -T postgres dropdb --username appliance --if-exists --force appliance &&
    dc exec -T postgres createdb --username appliance --owner appliance appliance &&
    dc_with_stdin exec -T postgres pg_restore --username appliance --dbname appliance \
      --exit-on-error <"$DUMP"
}

# rollback: back to OLD from wherever PHASE got to; it never stops half-way on an error and
# is not interrupted (a signal only warns). Steps:
#   1. stop web and worker (the new ones, or the old ones stopped for the dump);
#   2. once the files were switched: the previous compose/ and .env (so the previous tag);
#   3. once migrations ran: the previous PostgreSQL alone, healthy, then the dump restored;
#   4. every service of OLD, healthy; only then is the state file removed.
rollback() {
  local broken=() switched=1 restore=0 data=""
  trap 'warn "the rollback goes on: it must finish"' INT TERM HUP
  case $PHASE in
    stopping | dumped) switched=0 ;;
    migrating | starting) restore=1 ;;
  esac
  warn "$FAILED; rolling back to $OLD"
  dc stop web worker || broken+=("stopping the web server and the worker")
  if ((switched)); then
    restore_files || broken+=("restoring $DIR/compose and $DIR/.env from their .previous copies")
  fi
  if ((restore)); then
    say "Starting the previous PostgreSQL alone, to restore the database into it..."
    if [[ ! -s $DUMP ]]; then
      broken+=("restoring the database: the dump ${DUMP:-(none)} is missing")
    elif ! dc up -d postgres || ! wait_healthy "$WAIT" postgres; then
      broken+=("starting the previous PostgreSQL")
    else
      restore_database || broken+=("restoring the database from $DUMP")
    fi
  fi
  # The previous web and worker never start on a database the new migrations may have changed.
  if ((${#broken[@]} == 0)); then
    dc up -d --remove-orphans || broken+=("starting $OLD again")
    if ((${#broken[@]} == 0)) && ! wait_healthy "$WAIT"; then
      broken+=("$OLD did not become healthy again")
    fi
  fi
  if ((${#broken[@]})); then
    die "upgrade to $NEW failed ($FAILED) and the rollback failed too: ${broken[*]}. Run this script again to retry the rollback, or follow \"When the rollback fails\" in docs/upgrade.md; the dump is ${DUMP:-(none)}." "$EXIT_BROKEN"
  fi
  rm -f "$STATE"
  ((!restore)) || data=" with the database as it was before (from $DUMP)"
  ((switched)) ||
    die "upgrade to $NEW stopped before anything was changed ($FAILED); $OLD runs again. Fix the cause and run this again."
  die "upgrade to $NEW failed ($FAILED); rolled back to $OLD$data. The new compose files are in $DIR/compose.failed." "$EXIT_ROLLED_BACK"
}

# interrupted SIGNAL: before anything changed there is nothing to undo; after, the rollback.
interrupted() {
  FAILED="interrupted by SIG$1"
  [[ -f $STATE ]] || die "$FAILED; nothing was changed."
  rollback
}

# finish_interrupted: a state file at the start means an upgrade ended without finishing
# (killed, power lost, or its rollback failed): its rollback is completed now.
finish_interrupted() {
  if ! { OLD=$(env_value old "$STATE") && NEW=$(env_value new "$STATE") &&
    DUMP=$(env_value dump "$STATE") && PHASE=$(env_value phase "$STATE"); }; then
    die "$STATE is incomplete. Fix: follow \"When the rollback fails\" in docs/upgrade.md, then delete it."
  fi
  FAILED="an earlier upgrade from $OLD to $NEW did not finish (it got to: $PHASE)"
  warn "$FAILED; finishing its rollback now. Run this script again afterwards to upgrade."
  rollback
}

# The version is already the release's: say so only when the stack is healthy too.
already_upgraded() {
  wait_healthy "$WAIT" ||
    die "$DIR runs $NEW already, but not every service is healthy (see above). Fix: see $DIR/fotostudio logs SERVICE; installer/install.sh of this release repairs the install."
  say "The appliance in $DIR runs $NEW already and is healthy: nothing to do."
  exit 0
}

main() {
  local order
  umask 077 # the dump holds every client's data
  parse_args "$@"
  check_linux
  check_root
  check_docker
  [[ -f $DIR/.env ]] || die "no appliance is installed in $DIR (no .env). Fix: pass --dir, or install with installer/install.sh."
  lock_folder
  STATE="$DIR/upgrade/state"
  trap 'interrupted INT' INT
  trap 'interrupted TERM' TERM
  trap 'interrupted HUP' HUP
  [[ ! -f $STATE ]] || finish_interrupted
  # Copies a run left behind without a state file are stale: never roll back to them.
  rm -rf "$DIR/.env.previous" "$DIR/compose.previous"
  OLD=$(env_value APPLIANCE_VERSION) || die "$DIR/.env names no APPLIANCE_VERSION"
  NEW=$(source_version)
  order=$(compare_releases "$NEW" "$OLD") || die "cannot upgrade from $OLD to $NEW: $order"
  ((order != 0)) || already_upgraded
  ((order > 0)) ||
    die "$DIR runs $OLD, newer than $NEW: migrations only go forward. To go back, restore a recovery point (docs/backup-restore.md)."
  say "Upgrading the appliance in $DIR from $OLD to $NEW."
  check_gate
  take_recovery_point
  say "Building the image $IMAGE:$NEW (the appliance keeps running meanwhile)..."
  dc_build "$NEW" || die "building the image failed (see above); nothing was changed, $OLD still runs."
  say "Checking $DIR/config.toml with $NEW..."
  order=$(check_config_with "$NEW") ||
    die "$NEW refuses $DIR/config.toml: $order. Nothing was changed, $OLD still runs. Fix: correct config.toml (see docs/upgrade.md), then run this again."
  FAILED="the switch to $NEW failed"
  stop_and_dump || rollback
  switch || rollback
  trap - INT TERM HUP
  rm -f "$STATE"
  rm -rf "$DIR/compose.previous" "$DIR/.env.previous"
  say "Upgraded from $OLD to $NEW. The dump taken before, $DUMP, can be deleted once all is well."
}

main "$@"
