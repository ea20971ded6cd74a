# Sourced by tests/run: installs what the tests need and a fresh machine may lack. Each step does
# nothing when its tool is already there.
say() { printf '[tests] %s\n' "$*"; }
export PATH="$HOME/.cargo/bin:$PATH"

apt_updated=0
apt_install() {
	if [[ $apt_updated == 0 ]]; then
		apt-get update -qq
		apt_updated=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Build tools for librdkafka (rdkafka-sys builds it from source) and the clients the tests use.
missing=()
for tool in gcc g++ make perl pkg-config curl python3 pg_isready openssl; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
# librdkafka is built with OpenSSL (TLS and SASL to a production cluster): its headers.
[[ -f /usr/include/openssl/ssl.h ]] || missing+=("libssl-dev")
if ((${#missing[@]})); then
	say "installing Debian packages for: ${missing[*]}"
	apt_install build-essential perl pkg-config curl python3 postgresql-client openssl libssl-dev
fi

# promtool (Debian package `prometheus`) lints every process's /metrics in the tests. The package
# would start a Prometheus server listening on all interfaces: keep its service from starting.
if ! command -v promtool >/dev/null; then
	say "installing promtool (Debian package prometheus; its server is not started)"
	policy=/usr/sbin/policy-rc.d
	own_policy=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
	fi
	apt_install --no-install-recommends prometheus
	if ((own_policy)); then rm -f "$policy"; fi
fi

# PostgreSQL: the tests create a database per test on 127.0.0.1:5432 (TEST_PG_ADMIN_URL overrides).
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
	if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
		say "installing PostgreSQL"
		apt_install postgresql
	fi
	version=$(ls /etc/postgresql | sort -V | tail -1)
	hba=/etc/postgresql/$version/main/pg_hba.conf
	# Loopback only, trust auth: the tests' throwaway databases.
	if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
		sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
	fi
	say "starting PostgreSQL $version"
	pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
	for _ in $(seq 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
	pg_isready -h 127.0.0.1 -p 5432
fi

# The broker is the workspace's own (hie-log, the eventlog crate): `cargo build --bins` builds it.

if ! command -v cargo-nextest >/dev/null; then
	say "installing cargo-nextest"
	cargo install cargo-nextest --locked
fi


# fastavro: an independent Avro implementation the schema tests decode our messages with.
if ! python3 -c 'import fastavro' 2>/dev/null; then
	say "installing fastavro (pip)"
	python3 -m pip install --quiet fastavro 2>/dev/null ||
		python3 -m pip install --quiet --break-system-packages fastavro 2>/dev/null ||
		apt_install python3-fastavro
fi

# fhir.resources: an independent FHIR implementation the FHIR API tests validate our resources with
# (tests/check_fhir.py, R4B models; works offline).
if ! python3 -c 'import fhir.resources.R4B.bundle' 2>/dev/null; then
	say "installing fhir.resources (pip)"
	python3 -m pip install --quiet 'fhir.resources>=8,<9' 2>/dev/null ||
		python3 -m pip install --quiet --break-system-packages 'fhir.resources>=8,<9'
fi

# fhirpy and PyJWT: the independent EHR client of the SMART tests (tests/ehr_client.py).
if ! python3 -c 'import fhirpy, jwt, cryptography' 2>/dev/null; then
	say "installing fhirpy and PyJWT (pip)"
	python3 -m pip install --quiet 'fhirpy>=2,<3' 'PyJWT[crypto]>=2.8,<3' 2>/dev/null ||
		python3 -m pip install --quiet --break-system-packages 'fhirpy>=2,<3' 'PyJWT[crypto]>=2.8,<3'
fi

# The portal's browser tests (tests/pipeline/portal.rs): Debian's chromium and its WebDriver, and
# axe-core (npm) injected into each page, kept in a cache folder outside the repository.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
	say "installing chromium and chromium-driver (Debian)"
	apt_install --no-install-recommends chromium chromium-driver fonts-liberation
fi
axe_dir="${HIE_TEST_CACHE:-$HOME/.cache/hie-tests}/axe"
if [[ ! -f $axe_dir/node_modules/axe-core/axe.min.js ]]; then
	if ! command -v npm >/dev/null; then
		say "installing npm (Debian)"
		apt_install --no-install-recommends npm
	fi
	say "installing axe-core (npm) into $axe_dir"
	mkdir -p "$axe_dir"
	npm install --silent --no-audit --no-fund --prefix "$axe_dir" 'axe-core@4'
fi
export HIE_AXE_JS="$axe_dir/node_modules/axe-core/axe.min.js"
