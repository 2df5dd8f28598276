# shellcheck shell=bash disable=SC2034 # its variables are read by the scripts that source it
# What install.sh and upgrade.sh share: messages, the checks of the machine and of Docker, the
# compose command of an install folder, files written only when they change, and waiting for
# the stack to report healthy. Sourced, never run; the caller sets DIR and SOURCE.
#
# Overrides read from the environment, for the installer's own tests (docs/install.md):
#   FOTOSTUDIO_ALLOW_NON_ROOT=1   run without root; files are not chowned
#   FOTOSTUDIO_PORTS="80 443"     the TCP ports that must be free
#   FOTOSTUDIO_HOSTS_FILE=FILE    resolve the domain from this hosts-format file, not from DNS
#   FOTOSTUDIO_MIN_MEMORY_MB, FOTOSTUDIO_MIN_DISK_GB   the memory and disk thresholds

readonly PROJECT=fotostudio
readonly IMAGE=fotostudio-appliance
# The stack's services: migrate must have finished with 0, every other one must be running
# and, where it has a health check, healthy.
readonly SERVICES=(postgres minio migrate web worker caddy)
readonly APP_UID=10001 POSTGRES_UID=999
# Set by put_file and sync_compose: whether they wrote anything. CHOWN: set by check_root.
CHANGED=0 CHOWN=0

say() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
# die MESSAGE [EXIT CODE]: one line saying what is wrong and how to fix it.
die() {
  printf 'error: %s\n' "$1" >&2
  exit "${2:-1}"
}

# --- versions ------------------------------------------------------------------------------

# version_at_least HAVE WANT: true when HAVE (27.3.1, v2.29.7, 24.0.7-1) >= WANT, by number.
version_at_least() {
  local have=${1#v} want=$2 i h w
  local -a have_parts want_parts
  IFS=. read -r -a have_parts <<<"${have%%[-+~ ]*}"
  IFS=. read -r -a want_parts <<<"$want"
  for i in 0 1 2; do
    h=${have_parts[i]:-0} w=${want_parts[i]:-0}
    [[ $h =~ ^[0-9]+$ && $w =~ ^[0-9]+$ ]] || return 1
    ((10#$h > 10#$w)) && return 0
    ((10#$h < 10#$w)) && return 1
  done
  return 0
}

# release_key VERSION: six numbers that order the appliance's releases as PEP 440 does for
# the forms it uses, N.N.N[.N] with an optional aN, bN or rcN (0.2.0a1 < 0.2.0b1 < 0.2.0rc1 <
# 0.2.0 = 0.2.0.0 < 0.2.0.1). Any other form (0.2, 0.2.0.dev1, 0.2.0-rc1) fails with why.
release_key() {
  local n='([0-9]{1,9})' rank
  local re="^${n}[.]${n}[.]${n}([.]${n})?((a|b|rc)${n})?\$"
  if [[ ! $1 =~ $re ]]; then
    printf '"%s" is not a release version this script can order (N.N.N or N.N.N.N, optionally followed by aN, bN or rcN, e.g. 0.2.0 or 0.2.0rc1)\n' "$1"
    return 1
  fi
  case ${BASH_REMATCH[7]} in
    a) rank=0 ;;
    b) rank=1 ;;
    rc) rank=2 ;;
    *) rank=3 ;; # a final release comes after its pre-releases
  esac
  printf '%d %d %d %d %d %d\n' "$((10#${BASH_REMATCH[1]}))" "$((10#${BASH_REMATCH[2]}))" \
    "$((10#${BASH_REMATCH[3]}))" "$((10#${BASH_REMATCH[5]:-0}))" "$rank" "$((10#${BASH_REMATCH[8]:-0}))"
}

# compare_releases A B: prints -1, 0 or 1 as A is older than, the same as or newer than B;
# fails, printing why, when either is not a release version.
compare_releases() {
  local a b i
  local -a ka kb
  a=$(release_key "$1") || {
    printf '%s\n' "$a"
    return 1
  }
  b=$(release_key "$2") || {
    printf '%s\n' "$b"
    return 1
  }
  read -r -a ka <<<"$a"
  read -r -a kb <<<"$b"
  for i in 0 1 2 3 4 5; do
    if ((ka[i] != kb[i])); then
      ((ka[i] < kb[i])) && echo -1 || echo 1
      return 0
    fi
  done
  echo 0
}

# source_version: the version in the release's pyproject.toml, the image's tag.
source_version() {
  local line re='^version = "([0-9A-Za-z.+-]+)"$'
  while IFS= read -r line; do
    if [[ $line =~ $re ]]; then
      printf '%s\n' "${BASH_REMATCH[1]}"
      return 0
    fi
  done <"$SOURCE/pyproject.toml"
  die "no version in $SOURCE/pyproject.toml: run the installer from a release of the appliance"
}

# --- the machine ---------------------------------------------------------------------------

check_linux() {
  [[ $(uname -s) == Linux ]] || die "the appliance runs on Linux only (this is $(uname -s))."
}

# check_root: sets CHOWN=1 when files can be given to the containers' users.
check_root() {
  CHOWN=0
  if ((EUID == 0)); then
    CHOWN=1
  elif [[ ${FOTOSTUDIO_ALLOW_NON_ROOT:-} == 1 ]]; then
    warn "not root: files keep your user as owner (FOTOSTUDIO_ALLOW_NON_ROOT=1, for tests only)"
  else
    die "this needs root. Fix: run it with sudo (sudo bash $0 ...)."
  fi
}

check_docker() {
  local server compose
  command -v docker >/dev/null 2>&1 ||
    die "Docker is not installed. Fix: install Docker Engine 24 or newer (https://docs.docker.com/engine/install/)."
  if ! server=$(docker version --format '{{.Server.Version}}' 2>/dev/null </dev/null) ||
    [[ -z $server ]]; then
    die "Docker's engine does not answer. Fix: start it (systemctl start docker) and run this again."
  fi
  version_at_least "$server" 24 ||
    die "Docker $server is too old: 24 or newer is needed. Fix: upgrade Docker Engine (https://docs.docker.com/engine/install/)."
  compose=$(docker compose version --short 2>/dev/null </dev/null) ||
    die "Docker Compose v2 is missing. Fix: install the docker-compose-plugin package."
  version_at_least "$compose" 2 ||
    die "Docker Compose $compose is too old: v2 is needed. Fix: install the docker-compose-plugin package."
}

# --- the install folder's compose project --------------------------------------------------

# dc ARGS...: docker compose on the install folder. Its stdin is closed so that docker never
# swallows answers piped into the installer; dc_with_stdin is for the one call that feeds it.
dc() {
  dc_with_stdin "$@" </dev/null
}

dc_with_stdin() {
  local files=(--file "$DIR/compose/docker-compose.yml")
  # The site's own additions (the Ansible role's backup mounts, say) live beside .env, so a
  # new release's compose/ never overwrites them.
  [[ ! -f $DIR/docker-compose.override.yml ]] ||
    files+=(--file "$DIR/docker-compose.override.yml")
  docker compose --project-name "$PROJECT" --env-file "$DIR/.env" "${files[@]}" "$@"
}

# dc_release VERSION ARGS...: docker compose with the release's own compose file (and the
# site's override) and VERSION as the image tag, for what must happen before the install
# folder is switched to the release: building its image, checking config.toml with it.
# The environment wins over .env, so the running version's .env stays as it is.
dc_release() {
  local version=$1 files=(--file "$SOURCE/compose/docker-compose.yml")
  shift
  [[ ! -f $DIR/docker-compose.override.yml ]] ||
    files+=(--file "$DIR/docker-compose.override.yml")
  APPLIANCE_VERSION=$version APPLIANCE_SOURCE=$SOURCE docker compose --project-name "$PROJECT" \
    --env-file "$DIR/.env" "${files[@]}" "$@" </dev/null
}

# dc_build VERSION: build the image from the release's source tree (the install folder holds
# no source).
dc_build() {
  dc_release "$1" build
}

# check_config_with VERSION: the image of VERSION judges config.toml (its entrypoint is
# `appliance`, so run takes the sub-command alone); on a refusal, prints its last line.
check_config_with() {
  local out
  out=$(dc_release "$1" run --rm --no-deps -T migrate check-config 2>&1) && return 0
  printf '%s\n' "${out##*$'\n'}"
  return 1
}

# env_value KEY [FILE]: a value of the install folder's .env (read, never sourced).
env_value() {
  local line
  while IFS= read -r line || [[ -n $line ]]; do
    if [[ $line == "$1="* ]]; then
      printf '%s\n' "${line#*=}"
      return 0
    fi
  done <"${2:-$DIR/.env}"
  return 1
}

# stack_waiting [SERVICE...]: prints the services (default: all) not ready yet
# ("web (starting)"), one a line; returns 2 when one can never become ready (migrations failed). `ps --format json` prints one object a
# container, its "ID" first, as a JSON array before Compose 2.21 and as JSON lines since, so
# each object is taken from one "ID" to the next and read field by field.
stack_waiting() {
  local json rest object service state health code name re_exit='"ExitCode"[[:space:]]*:[[:space:]]*([0-9-]+)'
  local -A ready=()
  local -a wanted=("$@")
  ((${#wanted[@]})) || wanted=("${SERVICES[@]}")
  json=$(dc ps --all --format json 2>/dev/null) || json=""
  rest=$json
  while [[ $rest == *'"ID"'* ]]; do
    rest=${rest#*'"ID"'}
    object=${rest%%'"ID"'*}
    service=$(json_field Service "$object") state=$(json_field State "$object")
    [[ -n $service ]] || continue
    health=$(json_field Health "$object") code=0
    [[ $object =~ $re_exit ]] && code=${BASH_REMATCH[1]}
    if [[ $service == migrate ]]; then
      if [[ $state == exited && $code == 0 ]]; then
        ready[migrate]=${ready[migrate]:-yes}
      elif [[ $state == exited && " ${wanted[*]} " == *" migrate "* ]]; then
        printf 'migrate (exited with %s: docker compose logs migrate)\n' "$code"
        return 2
      else
        ready[migrate]="($state)"
      fi
    elif [[ $state == running && ($health == healthy || -z $health) ]]; then
      ready[$service]=${ready[$service]:-yes}
    else
      ready[$service]="(${health:-$state})"
    fi
  done
  for name in "${wanted[@]}"; do
    if [[ ${ready[$name]:-} != yes ]]; then
      printf '%s %s\n' "$name" "${ready[$name]:-(not started)}"
    fi
  done
}

# json_field KEY OBJECT: the string value of KEY in one flat JSON object's text.
json_field() {
  local re="\"$1\"[[:space:]]*:[[:space:]]*\"([^\"]*)\""
  [[ $2 =~ $re ]] && printf '%s' "${BASH_REMATCH[1]}"
  return 0
}

# wait_healthy SECONDS [SERVICE...]: poll until every service (default: all) is ready; on a
# time-out (or failed migrations) say which are not and return 1.
wait_healthy() {
  local deadline=$((SECONDS + $1)) waiting status what=${2:+${*:2}}
  shift
  say "Waiting for ${what:-the services} to report healthy (at most $((deadline - SECONDS)) s)..."
  while :; do
    status=0
    waiting=$(stack_waiting "$@") || status=$?
    if [[ -z $waiting && $status == 0 ]]; then
      say "${what:-All services}: healthy."
      return 0
    fi
    if ((status == 2 || SECONDS >= deadline)); then
      printf 'not ready: %s\n' "${waiting//$'\n'/, }" >&2
      return 1
    fi
    sleep 1 # the poll interval; the deadline above bounds the wait
  done
}

# --- one at a time ---------------------------------------------------------------------------

# lock_folder: hold $DIR/upgrade/lock until this script ends, so that two installs or upgrades
# never work on one install folder at once. The kernel drops the lock with the last process
# holding it, also after a kill; the short wait covers a child that outlives a killed run.
lock_folder() {
  command -v flock >/dev/null 2>&1 ||
    die "flock is missing. Fix: install util-linux (apt-get install util-linux)."
  ensure_dir "$DIR/upgrade" 0700 0
  exec {LOCK_FD}>>"$DIR/upgrade/lock" || die "cannot open $DIR/upgrade/lock"
  flock --wait 3 "$LOCK_FD" ||
    die "another install or upgrade is running in $DIR (it holds $DIR/upgrade/lock). Fix: wait until it has finished, then run this again."
}

# --- files ---------------------------------------------------------------------------------

# ensure_owner_mode PATH MODE UID [GID]: set what differs only, so a second run changes
# nothing; the group is GID (default: UID's number), so a wrong group is repaired too.
ensure_owner_mode() {
  local path=$1 mode=$2 owner="$3:${4:-$3}" now
  now=$(stat -c '%a %u:%g' "$path")
  [[ ${now%% *} == "${mode#0}" ]] || chmod "$mode" "$path"
  if ((CHOWN)) && [[ ${now#* } != "$owner" ]]; then
    chown "$owner" "$path"
  fi
}

# ensure_dir PATH MODE UID [GID]
ensure_dir() {
  [[ -d $1 ]] || mkdir -p "$1"
  ensure_owner_mode "$@"
}

# put_file DEST MODE UID GID < CONTENT: replace DEST only when the content differs, keeping
# the old one as DEST.bak; CHANGED says whether it did. Written beside DEST and renamed, so
# DEST is whole at every moment.
put_file() {
  local dest=$1 mode=$2 uid=$3 gid=$4 tmp
  CHANGED=0
  tmp=$(mktemp "$dest.XXXXXX")
  cat >"$tmp"
  if [[ -f $dest ]] && cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"
    ensure_owner_mode "$dest" "$mode" "$uid" "$gid"
    return 0
  fi
  chmod "$mode" "$tmp"
  if ((CHOWN)); then chown "$uid:$gid" "$tmp"; fi
  if [[ -f $dest ]]; then cp -p "$dest" "$dest.bak"; fi
  mv -f "$tmp" "$dest"
  CHANGED=1
}

# render TEMPLATE NAME=VALUE...: the template with each {{NAME}} replaced. The values were
# validated by the caller; nothing is evaluated, and a placeholder left over stops the run.
render() {
  local template=$1 text pair
  shift
  text=$(<"$template")
  for pair in "$@"; do
    text=${text//"{{${pair%%=*}}}"/"${pair#*=}"}
  done
  if [[ $text =~ \{\{[A-Z_]+\}\} ]]; then
    die "$template: no value for ${BASH_REMATCH[0]}"
  fi
  printf '%s\n' "$text"
}

# sync_compose KEEP: make $DIR/compose a copy of the release's compose/ folder. When it
# differs, the old copy is kept as $DIR/compose.KEEP; CHANGED says whether it did.
sync_compose() {
  local keep="$DIR/compose.$1"
  CHANGED=0
  [[ -f $SOURCE/compose/docker-compose.yml ]] ||
    die "$SOURCE/compose/docker-compose.yml is missing: run this from a complete release."
  if [[ -d $DIR/compose ]] && diff -rq "$SOURCE/compose" "$DIR/compose" >/dev/null 2>&1; then
    return 0
  fi
  # Each step checked: the upgrade calls this where errexit does not apply.
  rm -rf "$DIR/compose.new" "$keep" &&
    cp -R "$SOURCE/compose" "$DIR/compose.new" &&
    chmod -R u=rwX,go=rX "$DIR/compose.new" || return 1
  if [[ -d $DIR/compose ]]; then mv "$DIR/compose" "$keep" || return 1; fi
  mv "$DIR/compose.new" "$DIR/compose" || return 1
  CHANGED=1
}
