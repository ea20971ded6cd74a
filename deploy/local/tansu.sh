# shellcheck shell=bash disable=SC2034
# The Tansu broker the stack and the tests need, and installing it (sourced by deploy/local/lib.sh
# and tests/prereqs.sh, which define `say`).

# This version, with these cargo features: postgres (its PostgreSQL storage engine), libsql
# (SQLite), dynostore (memory: the tests' brokers).
TANSU_VERSION=0.6.0
TANSU_FEATURES=libsql,dynostore,postgres

find_tansu() {
	command -v tansu 2>/dev/null || { [[ -x $HOME/.cargo/bin/tansu ]] && printf '%s' "$HOME/.cargo/bin/tansu"; }
}

# The cargo features the installed tansu was built with (from cargo's install record), comma-separated.
tansu_features() {
	python3 - "${CARGO_HOME:-$HOME/.cargo}/.crates2.json" <<-'EOF' 2>/dev/null
		import json, sys
		installs = json.load(open(sys.argv[1]))["installs"]
		for k, v in installs.items():
		    if k.startswith("tansu "):
		        print(",".join(v.get("features", [])))
	EOF
}

# Installs Tansu when it is missing or was built without a feature the stack needs (cargo
# install replaces the binary; 10-30 minutes, once).
ensure_tansu() {
	local have want missing=()
	if find_tansu >/dev/null; then
		have=",$(tansu_features),"
		# Not installed by cargo (no record of its features): take it as it is.
		[[ $have != ",," ]] || return 0
		for want in ${TANSU_FEATURES//,/ }; do
			[[ $have == *",$want,"* ]] || missing+=("$want")
		done
		((${#missing[@]})) || return 0
		say "the installed tansu lacks the cargo feature(s) ${missing[*]}; reinstalling it"
	fi
	if pgrep -f "cargo install tansu" >/dev/null; then
		say "tansu is being installed by another process; waiting for it"
		while pgrep -f "cargo install tansu" >/dev/null; do sleep 15; done
		find_tansu >/dev/null && return 0
	fi
	say "installing the Tansu broker $TANSU_VERSION (cargo install tansu); this takes 10-30 minutes, once"
	cargo install tansu --version "$TANSU_VERSION" --locked --force --features "$TANSU_FEATURES"
}
