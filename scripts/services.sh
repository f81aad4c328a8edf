#!/usr/bin/env bash
# Install the system packages the test suite runs against: PostgreSQL 15 (a private server is
# started by the tests themselves, see tests/conftest.py) and headless Chromium with chromedriver
# (the MLflow UI browser test). Debian/Ubuntu only. Idempotent: when everything is installed it
# only checks and exits, in well under a second.
#
#   scripts/services.sh            # or: make services
#
# As root it calls apt-get directly; as another user it uses sudo, and without sudo it stops and
# names the command to run.
set -euo pipefail

PACKAGES=(postgresql chromium chromium-driver)
PG_BIN=/usr/lib/postgresql/15/bin
# What the tests call; a package counts as present only if these are there too.
NEEDED_FILES=("$PG_BIN/initdb" "$PG_BIN/pg_ctl" "$PG_BIN/postgres" /usr/bin/chromium /usr/bin/chromedriver)

missing_packages() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then
            echo "$pkg"
        fi
    done
}

check_files() {
    local f ok=0
    for f in "${NEEDED_FILES[@]}"; do
        if [ ! -x "$f" ]; then
            echo "services: $f is missing after installing ${PACKAGES[*]}" >&2
            ok=1
        fi
    done
    return $ok
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    if check_files 2>/dev/null; then
        echo "services: PostgreSQL 15 and Chromium found (not a Debian system; nothing installed)"
        exit 0
    fi
    echo "services: this script installs Debian packages (${PACKAGES[*]}) with apt-get, which" \
         "this system lacks. Install PostgreSQL 15 server binaries at $PG_BIN and Chromium with" \
         "chromedriver at /usr/bin/chromium and /usr/bin/chromedriver by hand." >&2
    exit 1
fi

mapfile -t MISSING < <(missing_packages)
if [ "${#MISSING[@]}" -eq 0 ]; then
    check_files
    echo "services: ${PACKAGES[*]} already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    AS_ROOT=()
elif command -v sudo >/dev/null 2>&1; then
    AS_ROOT=(sudo)
else
    echo "services: missing Debian packages: ${MISSING[*]}. Run as root:" >&2
    echo "    apt-get update && apt-get install -y --no-install-recommends ${MISSING[*]}" >&2
    echo "then run this again (or make test)." >&2
    exit 1
fi

echo "services: installing ${MISSING[*]} (about a minute) ..."
# The tests start their own server in a temporary folder: no need for Debian's default cluster
# (which would otherwise be created, and started where an init system runs, on port 5432).
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    "${AS_ROOT[@]}" mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" | "${AS_ROOT[@]}" tee \
        /etc/postgresql-common/createcluster.d/nightshift-no-main-cluster.conf >/dev/null
fi
export DEBIAN_FRONTEND=noninteractive
"${AS_ROOT[@]}" apt-get update -qq
"${AS_ROOT[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${MISSING[@]}" >/dev/null
check_files
echo "services: installed ${MISSING[*]}"
