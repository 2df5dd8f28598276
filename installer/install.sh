#!/usr/bin/env bash
# Install the Fotostudio Appliance's Docker Compose bundle on this server: check the machine,
# ask five questions (or take them as flags), write the secrets, config.toml and .env, build
# the image, start the stack, wait until it is healthy and print the setup link. Running it
# again with the same answers changes nothing. docs/install.md explains every step.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCE=$(dirname "$HERE")
# shellcheck source=installer/lib.sh
source "$HERE/lib.sh"

readonly DEFAULT_DIR=/opt/fotostudio ZONEINFO=/usr/share/zoneinfo
# The bundle's internal network: Caddy has a fixed address in it, the only one the app believes
# X-Forwarded-* from, outside the range Docker hands to the other containers.
readonly SUBNET=172.30.40.0/24 CADDY_IP=172.30.40.2 DYNAMIC_RANGE=172.30.40.128/25

usage() {
  cat <<EOF
Usage: sudo bash installer/install.sh [options]

Installs the appliance with Docker Compose into a folder (default $DEFAULT_DIR). Without
--non-interactive it asks its questions on the terminal (answers may come from a pipe).

Options:
  --mode internet|lan   internet: a public domain, certificates from Let's Encrypt;
                        lan: a name or address on the studio's network, Caddy's own CA
  --domain NAME         the domain (internet) or LAN name or IPv4 address (lan)
  --email ADDRESS       e-mail for Let's Encrypt's expiry notices (internet; optional)
  --timezone ZONE       IANA time zone, e.g. Europe/Berlin (default: this server's)
  --dir PATH            install folder (default $DEFAULT_DIR)
  --public-ip ADDRESS   this server's public address, when it sits behind NAT (repeatable)
  --wait SECONDS        how long to wait for the services to be healthy (default 300)
  --rebuild             build the image even when this version's image exists
  --non-interactive     ask nothing: take the answers from the flags above
  --yes                 do not ask for confirmation
  -h, --help            this text

Exit status: 0 installed (or already installed), 1 a check or step failed (the message says
how to fix it; run the installer again afterwards), 2 wrong usage.
EOF
}

MODE="" SITE="" EMAIL="" EMAIL_SET=0 TZ_NAME="" DIR="" WAIT=300 REBUILD=0
INTERACTIVE=1 YES=0 RESTART_APP=0
PUBLIC_IPS=()

parse_args() {
  while (($#)); do
    case $1 in
      --mode | --domain | --email | --timezone | --dir | --public-ip | --wait)
        (($# >= 2)) || die "$1 needs a value (see --help)" 2
        case $1 in
          --mode) MODE=$2 ;;
          --domain) SITE=$2 ;;
          --email) EMAIL=$2 EMAIL_SET=1 ;;
          --timezone) TZ_NAME=$2 ;;
          --dir) DIR=$2 ;;
          --public-ip) PUBLIC_IPS+=("$2") ;;
          --wait) WAIT=$2 ;;
        esac
        shift 2
        ;;
      --rebuild) REBUILD=1 && shift ;;
      --non-interactive) INTERACTIVE=0 && shift ;;
      --yes) YES=1 && shift ;;
      -h | --help) usage && exit 0 ;;
      *) die "unknown option $1 (see --help)" 2 ;;
    esac
  done
  [[ $WAIT =~ ^[1-9][0-9]{0,4}$ ]] || die "--wait takes a number of seconds" 2
}

# --- checks of the machine -----------------------------------------------------------------

check_memory() {
  local key kb _ min_mb=${FOTOSTUDIO_MIN_MEMORY_MB:-1800}
  while read -r key kb _; do
    [[ $key == MemTotal: ]] && break
  done </proc/meminfo
  # A "2 GB" machine reports a little less than 2048 MiB, hence 1800 by default.
  ((kb / 1024 >= min_mb)) ||
    die "this server has $((kb / 1024)) MiB of memory; the appliance needs 2 GB. Fix: give the machine more memory."
}

check_clock() {
  local synced
  if ! command -v timedatectl >/dev/null 2>&1 ||
    ! synced=$(timedatectl show -p NTPSynchronized --value 2>/dev/null); then
    warn "cannot tell whether the clock is synchronised (no timedatectl answer); certificates and sign-in codes need the right time: make sure NTP (chrony, systemd-timesyncd) runs."
    return 0
  fi
  [[ $synced != no ]] ||
    die "the clock is not synchronised with NTP; certificates and sign-in codes need the right time. Fix: timedatectl set-ntp true, wait a minute, and run this again."
}

# The nearest existing folder of DIR decides the file system.
check_disk() {
  local at=$DIR avail min_gb=${FOTOSTUDIO_MIN_DISK_GB:-10} line
  while [[ ! -d $at ]]; do at=$(dirname "$at"); done
  line=$(df -Pk "$at" | tail -n 1)
  read -r _ _ _ avail _ <<<"$line"
  ((avail / 1024 / 1024 >= min_gb)) ||
    die "only $((avail / 1024 / 1024)) GB are free at $at; the appliance needs $min_gb GB. Fix: free space or choose another --dir."
}

# port_busy PORT: something listens on TCP PORT (ss, else /proc/net/tcp*).
port_busy() {
  local port=$1 hex _ local_address state
  if command -v ss >/dev/null 2>&1; then
    [[ -n $(ss -Hltn "sport = :$port" 2>/dev/null) ]]
    return
  fi
  printf -v hex ':%04X' "$port"
  for table in /proc/net/tcp /proc/net/tcp6; do
    [[ -r $table ]] || continue
    while read -r _ local_address _ state _; do
      [[ $state == 0A && $local_address == *"$hex" ]] && return 0
    done <"$table"
  done
  return 1
}

# The ports may be held by this appliance's own Caddy (a second run).
caddy_running() {
  [[ -f $DIR/.env && -f $DIR/compose/docker-compose.yml ]] || return 1
  [[ $(json_field State "$(dc ps --format json caddy 2>/dev/null)") == running ]]
}

check_ports() {
  local port busy=()
  for port in ${FOTOSTUDIO_PORTS:-80 443}; do
    if port_busy "$port"; then busy+=("$port"); fi
  done
  ((${#busy[@]})) || return 0
  caddy_running && return 0
  die "port ${busy[*]} is in use by another program (see: ss -ltnp 'sport = :${busy[0]}'); Caddy needs 80 and 443. Fix: stop that program (or move it to other ports) and run this again."
}

# upstream_nameserver: with systemd-resolved, the DNS server it forwards to; its stub at
# 127.0.0.53 answers from /etc/hosts and for the server's own name too.
upstream_nameserver() {
  local key value
  [[ -r /run/systemd/resolve/resolv.conf ]] || return 0
  while read -r key value _; do
    if [[ $key == nameserver ]]; then
      printf '%s\n' "$value"
      return 0
    fi
  done </run/systemd/resolve/resolv.conf
}

# only_addresses: the lines that are IPv4 or IPv6 addresses (dig +short also prints CNAMEs).
only_addresses() {
  local line
  while read -r line; do
    if [[ $line =~ ^[0-9.]+$ || $line =~ ^[0-9a-fA-F:]*:[0-9a-fA-F:.]*$ ]]; then
      printf '%s\n' "${line,,}"
    fi
  done
}

# resolve NAME: its A and AAAA records as the DNS has them, one a line. Not getent first: it
# reads /etc/hosts, where the server's own name is 127.0.1.1 and a split-horizon address may
# be. So dig, else host, else python3 asking the DNS server itself (dns_query.py); getent
# only as a last resort, with a warning.
resolve() {
  local address names server
  if [[ -n ${FOTOSTUDIO_HOSTS_FILE:-} ]]; then
    while read -r address names; do
      if [[ $address != \#* && " $names " == *" $1 "* ]]; then printf '%s\n' "$address"; fi
    done <"$FOTOSTUDIO_HOSTS_FILE"
    return 0
  fi
  server=$(upstream_nameserver)
  if command -v dig >/dev/null 2>&1; then
    { dig +short +time=3 +tries=2 ${server:+"@$server"} "$1" A
      dig +short +time=3 +tries=2 ${server:+"@$server"} "$1" AAAA; } 2>/dev/null </dev/null |
      only_addresses | sort -u
  elif command -v host >/dev/null 2>&1; then
    { host -W 3 -t A "$1" ${server:+"$server"}
      host -W 3 -t AAAA "$1" ${server:+"$server"}; } 2>/dev/null </dev/null |
      while read -r _ _ _ address; do printf '%s\n' "${address##* }"; done | only_addresses | sort -u
  elif command -v python3 >/dev/null 2>&1; then
    say "  (no dig or host here: python3 asks the DNS server ${server:-of /etc/resolv.conf} for $1)" >&2
    python3 "$HERE/dns_query.py" "$1" ${server:+"$server"} </dev/null | only_addresses | sort -u
  else
    warn "no dig, host or python3 here: resolving $1 with getent, which reads /etc/hosts first. For a check that asks the DNS itself, install dnsutils (dig)."
    { getent ahosts "$1" 2>/dev/null || true; } | while read -r address _; do
      printf '%s\n' "$address"
    done | only_addresses | sort -u
  fi
}

# This server's own addresses (not loopback or link-local) and the ones given as --public-ip.
host_addresses() {
  local _ family address rest
  if command -v ip >/dev/null 2>&1; then
    { ip -o addr show 2>/dev/null || true; } | while read -r _ _ family address rest; do
      if [[ ($family == inet || $family == inet6) && $rest != *"scope host"* &&
        $rest != *"scope link"* ]]; then
        printf '%s\n' "${address%/*}"
      fi
    done
  fi
  if ((${#PUBLIC_IPS[@]})); then printf '%s\n' "${PUBLIC_IPS[@]}"; fi
  return 0
}

# Every A and AAAA record must be this server: a browser or Let's Encrypt may take any of
# them, and a stale AAAA record alone makes certificates fail.
check_dns() {
  local resolved mine address elsewhere=()
  resolved=$(resolve "$SITE")
  [[ -n $resolved ]] ||
    die "$SITE does not resolve to any address. Fix: create a DNS A (or AAAA) record pointing at this server, wait until it is visible, and run this again."
  mine=$(host_addresses)
  while read -r address; do
    grep -qixF -- "$address" <<<"$mine" || elsewhere+=("$address")
  done <<<"$resolved"
  ((${#elsewhere[@]})) || return 0
  die "$SITE resolves to ${resolved//$'\n'/, }; ${elsewhere[*]} is not an address of this server (${mine//$'\n'/, }). Fix: point every A and AAAA record of $SITE at this server and remove stale ones; behind NAT, pass --public-ip with each public address."
}

# An existing folder is either an earlier install of this version or empty.
check_folder() {
  local installed
  if [[ -f $DIR/upgrade/state ]]; then
    die "an upgrade of $DIR did not finish ($DIR/upgrade/state). Fix: run installer/upgrade.sh of the release it was upgrading to again: it finishes the rollback."
  fi
  if [[ -f $DIR/.env ]]; then
    installed=$(env_value APPLIANCE_VERSION) || installed="?"
    [[ $installed == "$VERSION" ]] ||
      die "$DIR runs version $installed and this installer is version $VERSION. Fix: change versions with installer/upgrade.sh of the new release."
  elif [[ -d $DIR && -n $(ls -A "$DIR") ]]; then
    die "$DIR exists and is not empty. Fix: choose an empty or new folder with --dir."
  fi
}

# --- questions -----------------------------------------------------------------------------

# Each check prints what is wrong and fails; the answer is already normalised.
valid_mode() {
  [[ $1 == internet || $1 == lan ]] || {
    echo "answer internet or lan"
    return 1
  }
}

valid_site() {
  local label='[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?' ipv4='^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$'
  if ((${#1} > 253)); then
    echo "a name has at most 253 characters"
    return 1
  fi
  if [[ $MODE == lan ]]; then
    if [[ $1 =~ $ipv4 ]]; then
      if ((10#${BASH_REMATCH[1]} <= 255 && 10#${BASH_REMATCH[2]} <= 255 &&
        10#${BASH_REMATCH[3]} <= 255 && 10#${BASH_REMATCH[4]} <= 255)); then
        return 0
      fi
    elif [[ $1 =~ ^$label(\.$label)*$ ]]; then
      return 0
    fi
    echo "'$1' is not a host name (letters, digits, dashes, dots) or an IPv4 address"
    return 1
  fi
  [[ $1 =~ ^($label\.)+([a-z]{2,63}|xn--[a-z0-9-]{1,59})$ ]] && return 0
  echo "'$1' is not a domain name such as photos.example.com"
  return 1
}

valid_email() {
  [[ -z $1 || (${#1} -le 254 && $1 =~ ^[A-Za-z0-9._%+-]+@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$) ]] && return 0
  echo "'$1' is not an e-mail address such as it@example.com"
  return 1
}

valid_zone() {
  local magic=""
  if [[ $1 =~ ^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$ && -f $ZONEINFO/$1 ]]; then
    read -r -n 4 magic <"$ZONEINFO/$1" || true
    [[ $magic == TZif ]] && return 0
  fi
  echo "'$1' is not a time zone in $ZONEINFO, such as Europe/Berlin"
  return 1
}

valid_dir() {
  [[ $1 =~ ^/[A-Za-z0-9._/-]*[A-Za-z0-9_-]$ && /$1/ != *"/../"* && /$1/ != *"/./"* ]] && return 0
  echo "'$1' is not an absolute folder path (letters, digits, . _ - /; not /)"
  return 1
}

# normalise VAR VALUE: trimmed; names in lower case; no trailing slash on a folder.
normalise() {
  local value=$2
  value=${value#"${value%%[![:space:]]*}"}
  value=${value%"${value##*[![:space:]]}"}
  case $1 in
    MODE | SITE) value=${value,,} ;;
    DIR) while [[ $value == */ && $value != / ]]; do value=${value%/}; done ;;
  esac
  printf -v "$1" '%s' "$value"
}

# ask VAR CHECK DEFAULT PROMPT: read answers from stdin until CHECK accepts one.
ask() {
  local var=$1 check=$2 default=$3 prompt=$4 answer problem _
  for _ in 1 2 3 4 5; do
    printf '%s%s: ' "$prompt" "${default:+ [$default]}"
    if ! IFS= read -r answer && [[ -z $answer ]]; then
      printf '\n'
      die "no answer to \"$prompt\": the input ended. Nothing was changed."
    fi
    normalise "$var" "$answer"
    [[ -n ${!var} ]] || printf -v "$var" '%s' "$default"
    if problem=$("$check" "${!var}"); then return 0; fi
    say "  $problem"
  done
  die "no valid answer to \"$prompt\" after 5 tries. Nothing was changed."
}

# take VAR CHECK FLAG: a value given as a flag must be right; there is nobody to ask again.
take() {
  local problem
  normalise "$1" "${!1}"
  problem=$("$2" "${!1}") || die "$3: $problem. Nothing was changed." 2
}

default_zone() {
  local zone=""
  [[ -r /etc/timezone ]] && read -r zone </etc/timezone
  if [[ -z $zone && -L /etc/localtime ]]; then
    zone=$(readlink /etc/localtime)
    zone=${zone#*zoneinfo/}
  fi
  if [[ -n $zone ]] && valid_zone "$zone" >/dev/null; then printf '%s\n' "$zone"; else printf 'UTC\n'; fi
}

collect_answers() {
  local need var flag check
  for need in MODE:--mode:valid_mode SITE:--domain:valid_site EMAIL:--email:valid_email \
    TZ_NAME:--timezone:valid_zone DIR:--dir:valid_dir; do
    IFS=: read -r var flag check <<<"$need"
    if [[ -n ${!var} ]]; then
      take "$var" "$check" "$flag"
    elif ((INTERACTIVE)); then
      case $var in
        MODE) ask MODE valid_mode internet "Reach the appliance from the internet (public domain, Let's Encrypt) or only on the studio's network? internet/lan" ;;
        SITE) if [[ $MODE == internet ]]; then
          ask SITE valid_site "" "Domain (its DNS record must point at this server)"
        else
          ask SITE valid_site "" "Name or IPv4 address on the studio's network (e.g. fotostudio.lan)"
        fi ;;
        EMAIL) ((EMAIL_SET)) || [[ $MODE != internet ]] ||
          ask EMAIL valid_email "" "E-mail for Let's Encrypt's certificate notices (Enter to skip)" ;;
        TZ_NAME) ask TZ_NAME valid_zone "$(default_zone)" "Time zone of the studio" ;;
        DIR) ask DIR valid_dir "$DEFAULT_DIR" "Install folder" ;;
      esac
    else
      case $var in
        MODE | SITE) die "$flag is needed with --non-interactive (see --help)" 2 ;;
        TZ_NAME) TZ_NAME=$(default_zone) ;;
        DIR) DIR=$DEFAULT_DIR ;;
      esac
    fi
  done
  [[ $MODE == internet ]] || EMAIL=""
}

confirm() {
  say ""
  say "About to install Fotostudio Appliance $VERSION:"
  if [[ $MODE == internet ]]; then
    say "  address      https://$SITE (certificates from Let's Encrypt)"
    say "  ACME e-mail  ${EMAIL:-(none)}"
  else
    say "  address      https://$SITE (on the studio's network; Caddy's own certificate authority)"
  fi
  say "  time zone    $TZ_NAME"
  say "  folder       $DIR"
  ((YES)) && return 0
  ((INTERACTIVE)) || die "add --yes to install without confirmation. Nothing was changed."
  local answer=""
  printf 'Go on? [y/N]: '
  IFS= read -r answer || true
  [[ ${answer,,} == y || ${answer,,} == yes ]] || die "not confirmed. Nothing was changed."
}

# --- writing -------------------------------------------------------------------------------

# The template's last line: what an administrator or the Ansible role adds below it survives
# every later run of the installer.
readonly SITE_MARKER="# --- Site settings: everything below this line is kept when the installer runs again ---"
readonly ANSIBLE_BEGIN="# BEGIN extra backup repositories (managed by Ansible, role fotostudio)"
readonly ANSIBLE_END="# END extra backup repositories (managed by Ansible, role fotostudio)"

# site_settings FILE: the lines of an existing config.toml below the marker, exactly. A file
# from before the marker existed gives its Ansible block only: other hand edits cannot be
# told from the installer's own lines, and stay in config.toml.bak.
site_settings() {
  local line below=0 marked=0
  [[ -f $1 ]] || return 0
  grep -qxF -- "$SITE_MARKER" "$1" && marked=1
  while IFS= read -r line || [[ -n $line ]]; do
    if ((marked)); then
      ((!below)) || printf '%s\n' "$line"
      [[ $line != "$SITE_MARKER" ]] || below=1
    else
      [[ $line != "$ANSIBLE_BEGIN" ]] || below=1
      ((!below)) || printf '%s\n' "$line"
      [[ $line != "$ANSIBLE_END" ]] || below=0
    fi
  done <"$1"
  ((marked)) || warn "$1 has no site-settings line (an older installer wrote it): if you edited it by hand, copy your changes from config.toml.bak below the line \"${SITE_MARKER}\"."
}

# make_secret NAME: 32 random bytes as base64url (43 characters: safe in URLs, TOML and
# .env). An existing secret is never replaced: the database, the object store and every
# backup are locked with them.
make_secret() {
  local file="$DIR/secrets/$1" tmp
  [[ -s $file ]] && return 0
  tmp=$(mktemp "$file.XXXXXX")
  head -c 32 /dev/urandom | base64 -w 0 | tr '+/' '-_' | tr -d '=' >"$tmp"
  (($(wc -c <"$tmp") >= 43)) || die "could not read 32 random bytes from /dev/urandom"
  mv "$tmp" "$file"
  say "  made secrets/$1"
}

write_secrets() {
  local name password
  for name in postgres_password minio_root_password secret_key restic_password metrics_token; do
    make_secret "$name"
  done
  # Two secrets are the others in another shape; printf is a builtin, so the password is
  # never in a process's arguments.
  password=$(<"$DIR/secrets/postgres_password")
  put_file "$DIR/secrets/database_url" 0600 "$APP_UID" "$APP_UID" \
    < <(printf 'postgresql://appliance:%s@postgres:5432/appliance' "$password")
  put_file "$DIR/secrets/storage_secret_key" 0600 "$APP_UID" "$APP_UID" \
    <"$DIR/secrets/minio_root_password"
  rm -f "$DIR/secrets/"*.bak # an old secret is not kept beside the new one
  ensure_owner_mode "$DIR/secrets/postgres_password" 0600 "$POSTGRES_UID"
  ensure_owner_mode "$DIR/secrets/minio_root_password" 0600 0
  for name in secret_key restic_password metrics_token; do
    ensure_owner_mode "$DIR/secrets/$name" 0600 "$APP_UID"
  done
}

install_files() {
  local config env wrapper values=("SITE=$SITE" "MODE=$MODE" "EMAIL=$EMAIL" "TZ=$TZ_NAME" "DIR=$DIR"
    "SUBNET=$SUBNET" "CADDY_IP=$CADDY_IP" "DYNAMIC_RANGE=$DYNAMIC_RANGE" "VERSION=$VERSION")
  config=$(render "$HERE/templates/config.toml.in" "${values[@]}")
  env=$(render "$HERE/templates/env.in" "${values[@]}")
  wrapper=$(render "$HERE/templates/fotostudio.in" "DIR=$DIR")
  [[ -d $DIR ]] || (umask 022 && mkdir -p "$DIR")
  umask 077
  ensure_dir "$DIR" 0755 0
  lock_folder
  ensure_dir "$DIR/secrets" 0700 0
  ensure_dir "$DIR/data" 0755 0
  ensure_dir "$DIR/data/app" 0700 "$APP_UID"
  ensure_dir "$DIR/data/postgres" 0700 "$POSTGRES_UID"
  ensure_dir "$DIR/data/minio" 0700 0
  ensure_dir "$DIR/data/caddy" 0700 0
  ensure_dir "$DIR/backup" 0700 "$APP_UID"
  write_secrets
  # config.toml holds no secret; the app's user reads it through its group.
  local replacing=0
  [[ ! -f $DIR/config.toml ]] || replacing=1
  put_file "$DIR/config.toml" 0640 0 "$APP_UID" \
    < <(printf '%s\n' "$config" && site_settings "$DIR/config.toml")
  ((!CHANGED)) || say "  wrote config.toml"
  # Running containers keep the file they mounted: they need a restart to read the new one.
  ((!CHANGED || !replacing)) || RESTART_APP=1
  put_file "$DIR/.env" 0600 0 0 <<<"$env"
  ((!CHANGED)) || say "  wrote .env"
  sync_compose bak
  ((!CHANGED)) || say "  copied compose/"
  put_file "$DIR/fotostudio" 0755 0 0 <<<"$wrapper"
  ((!CHANGED)) || say "  wrote fotostudio (docker compose on this folder)"
}

# --- starting ------------------------------------------------------------------------------

start_stack() {
  local out hint="docker compose --env-file $DIR/.env -f $DIR/compose/docker-compose.yml"
  if ((!REBUILD)) && docker image inspect "$IMAGE:$VERSION" >/dev/null 2>&1 </dev/null; then
    say "The image $IMAGE:$VERSION is built already (--rebuild builds it again)."
  else
    say "Building the image $IMAGE:$VERSION (a few minutes the first time)..."
    dc_build "$VERSION" ||
      die "building the image failed (see above). Fix the cause and run the installer again."
  fi
  out=$(check_config_with "$VERSION") || die "the appliance refused $DIR/config.toml: $out"
  dc up -d --remove-orphans ||
    die "starting the services failed (see above). Fix the cause (see: $hint logs) and run the installer again."
  if ((RESTART_APP)); then
    say "Restarting the web server and the worker for the new config.toml..."
    dc restart web worker || die "restarting the web server and the worker failed (see above)."
  fi
  wait_healthy "$WAIT" ||
    die "the services are not healthy after $WAIT s. See why: $hint logs SERVICE; then run the installer again."
}

export_root_ca() {
  local ca="$DIR/data/caddy/caddy/pki/authorities/local/root.crt" dest="$DIR/fotostudio-root-ca.crt"
  local deadline=$((SECONDS + WAIT)) fingerprint=""
  until [[ -s $ca ]]; do
    ((SECONDS < deadline)) || die "Caddy made no root certificate ($ca) within $WAIT s: see its log."
    sleep 1 # the poll interval; the deadline above bounds the wait
  done
  if ! cmp -s "$ca" "$dest"; then
    cp "$ca" "$dest.new" && chmod 0644 "$dest.new" && mv "$dest.new" "$dest"
  fi
  if command -v openssl >/dev/null 2>&1; then
    fingerprint=$(openssl x509 -noout -fingerprint -sha256 -in "$dest" 2>/dev/null) || fingerprint=""
  fi
  say ""
  say "Browsers on the studio's network trust https://$SITE once they trust this certificate:"
  say "  $dest"
  [[ -z $fingerprint ]] || say "  ($fingerprint)"
  say "Copy it to each computer and phone (docs/tls.md, \"Trust the appliance's root certificate\"):"
  say "  Windows: certutil -addstore -f Root fotostudio-root-ca.crt (as administrator)"
  say "  macOS:   sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain fotostudio-root-ca.crt"
  say "  Linux:   copy to /usr/local/share/ca-certificates/ and run update-ca-certificates"
  say "  iOS and Android: open the file on the device and allow it as a trusted CA"
}

print_setup_link() {
  local out link
  if out=$(dc exec -T web appliance setup-token 2>&1) && link=${out##*$'\n'} &&
    [[ $link == https://* ]]; then
    say ""
    say "Fotostudio Appliance is running at https://$SITE"
    say "Open this link to start the setup wizard (it works until set-up is finished):"
    say ""
    say "    $link"
  elif [[ $out == *"already complete"* ]]; then
    say ""
    say "Fotostudio Appliance is running at https://$SITE (set-up is complete: sign in there)."
  else
    die "the services run, but no setup link could be made: ${out##*$'\n'}"
  fi
  say ""
  say "Keep a copy of $DIR/secrets/restic_password away from this server: no backup can be"
  say "restored without it."
}

main() {
  parse_args "$@"
  check_linux
  check_root
  check_docker
  check_memory
  check_clock
  VERSION=$(source_version)
  collect_answers
  check_folder
  check_disk
  check_ports
  [[ $MODE != internet ]] || check_dns
  confirm
  say ""
  install_files
  start_stack
  [[ $MODE != lan ]] || export_root_ca
  print_setup_link
}

main "$@"
