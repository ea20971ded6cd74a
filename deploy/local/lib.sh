# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this
# Shared by deploy/local/up and deploy/local/down (sourced, not run).
# Paths, and the pid-file bookkeeping that makes `up` idempotent and `down` precise.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HIE_DATA_DIR="${HIE_DATA_DIR:-$REPO/.local}"
mkdir -p "$HIE_DATA_DIR"
HIE_DATA_DIR="$(cd "$HIE_DATA_DIR" && pwd)" # absolute: tansu's SQLite URL and pg need it
LOG_DIR="$HIE_DATA_DIR/logs"
RUN_DIR="$HIE_DATA_DIR/run"
PG_DATA="$HIE_DATA_DIR/pg"
SHARED_PG="$HIE_DATA_DIR/shared-postgres" # "host port db" when up used a server it did not start
export HIE_DATA_DIR

say() { printf '==> %s\n' "$*"; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

pid_file() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }

# The pid recorded for <name>, if that process is still alive and still runs <binary> (a stale pid
# file after a reboot may point at an unrelated process that reused the number).
live_pid() {
	local name=$1 binary=$2 file pid
	file=$(pid_file "$name")
	[[ -f $file ]] || return 1
	pid=$(<"$file")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$binary" || return 1
	printf '%s' "$pid"
}

# True when something accepts TCP connections on host:port.
tcp_open() {
	(exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# Runs a PostgreSQL server binary as the `postgres` user when we are root (initdb and postgres
# refuse to run as root), else as ourselves.
as_pg_owner() {
	if [[ $(id -u) -eq 0 ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# The newest installed PostgreSQL server binaries (Debian keeps them off PATH).
pg_bin_dir() {
	local d
	d=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
	if [[ -n $d && -x $d/pg_ctl ]]; then
		printf '%s' "$d"
	elif command -v pg_ctl >/dev/null; then
		dirname "$(command -v pg_ctl)"
	else
		return 1
	fi
}
