# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this
# Shared by deploy/local/up, down and supervise (sourced, not run): paths, the pid-file
# bookkeeping that makes `up` idempotent and `down` precise, and starting and checking each
# component, so that `up` and the supervisor do it the same way.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HIE_DATA_DIR="${HIE_DATA_DIR:-$REPO/.local}"
mkdir -p "$HIE_DATA_DIR"
HIE_DATA_DIR="$(cd "$HIE_DATA_DIR" && pwd)" # absolute: the log directory and pg need it
LOG_DIR="$HIE_DATA_DIR/logs"
RUN_DIR="$HIE_DATA_DIR/run"
PG_DATA="$HIE_DATA_DIR/pg"
SHARED_PG="$HIE_DATA_DIR/shared-postgres" # "host port db" when up used a server it did not start
BIN_FILE="$RUN_DIR/bin-dir"               # the directory of the binaries up started
export HIE_DATA_DIR

say() { printf '==> %s\n' "$*"; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

pid_file() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }

# The pid recorded for <name>, if that process is still alive and still runs a program called
# <name> (a stale pid file after a reboot may point at an unrelated process that reused the number).
# Any of the first three arguments counts: a script run by bash (bash .../supervise), and a
# process still on its way through `setsid nohup <program>` to exec'ing it.
live_pid() {
	local name=$1 file pid arg args=()
	file=$(pid_file "$name")
	[[ -f $file ]] || return 1
	pid=$(<"$file")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	mapfile -d '' -t args <"/proc/$pid/cmdline" 2>/dev/null || return 1
	for arg in "${args[@]:0:3}"; do
		if [[ ${arg##*/} == "$name" ]]; then
			printf '%s' "$pid"
			return 0
		fi
	done
	return 1
}

# The program a live <name> runs, as the kernel sees it (ends in " (deleted)" once rebuilt).
running_exe() {
	local pid
	pid=$(live_pid "$1") || return 1
	readlink "/proc/$pid/exe" 2>/dev/null
}

# Records <pid> as <name>'s and waits (up to 30 s: a loaded machine is slow to fork and exec) until
# that process runs <name>: right after `cmd &`, /proc still shows the forked shell.
record_pid() { # name pid
	local i
	echo "$2" >"$(pid_file "$1")"
	for ((i = 0; i < 300; i++)); do
		live_pid "$1" >/dev/null && return 0
		kill -0 "$2" 2>/dev/null || return 0
		sleep 0.1
	done
}

# TERM, then KILL if it has not exited after 15 s.
stop_pid() { # name
	local name=$1 pid i
	if pid=$(live_pid "$name"); then
		say "stopping $name (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		kill -CONT "$pid" 2>/dev/null || true # a stopped (hung) process handles TERM only once resumed
		for ((i = 0; i < 30; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.5
		done
		if kill -0 "$pid" 2>/dev/null; then
			say "$name did not stop; killing it"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.2
		fi
	fi
	rm -f "$(pid_file "$name")"
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

# --- The event log (hie-log) ---------------------------------------------------------------------
# Starts the stack's broker, hie-log (the eventlog crate), on 127.0.0.1:$1 with its log in $2,
# logging to $LOG_DIR/hie-log.log; waits for the port.
start_broker() { # port log-dir
	local port=$1 dir=$2 i
	[[ -x $BIN/hie-log ]] || die "$BIN/hie-log is missing"
	say "starting the event log (hie-log) on 127.0.0.1:$port, log in $dir (its log: $LOG_DIR/hie-log.log)"
	# setsid: its own process group, so that a Ctrl-C in the shell that ran `up` does not reach it.
	RUST_LOG=${HIE_LOG_LOG:-info} setsid nohup "$BIN/hie-log" --addr "127.0.0.1:$port" --dir "$dir" \
		>>"$LOG_DIR/hie-log.log" 2>&1 </dev/null &
	record_pid hie-log $!
	for ((i = 0; i < 60; i++)); do
		tcp_open 127.0.0.1 "$port" && return 0
		kill -0 "$(<"$(pid_file hie-log)")" 2>/dev/null || {
			tail -n 30 "$LOG_DIR/hie-log.log" >&2
			die "hie-log exited"
		}
		sleep 1
	done
	tail -n 30 "$LOG_DIR/hie-log.log" >&2
	die "hie-log did not open port $port within 60 s"
}

# True when the broker answers a real Kafka request (Metadata, ListOffsets) within $2 seconds.
broker_answers() { # brokers [timeout-seconds]
	"$BIN/hiectl" check-broker --brokers "$1" --timeout-secs "${2:-5}" >/dev/null 2>&1
}

# --- Services ------------------------------------------------------------------------------------
start_service() { # name
	local name=$1
	say "starting $name (log: $LOG_DIR/$name.log)"
	setsid nohup "$BIN/$name" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
	record_pid "$name" $!
}

# The HTTP status of <addr>/healthz, or 000 when nothing answers within 5 s.
health_code() { # addr
	curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$1/healthz" 2>/dev/null || true
}
