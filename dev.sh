#!/usr/bin/env bash
# One entry point for a fresh machine: `./dev.sh relay` or `./dev.sh test`.
set -euo pipefail
cd "$(dirname "$0")"
venv=.venv

setup() {
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    # pip and setuptools are chatty (build warnings about editable installs): keep their
    # output in a log and show it only when the install fails.
    local log="$venv/install.log"
    if ! { "$venv/bin/pip" install -q --upgrade pip && "$venv/bin/pip" install -q -e ".[test]"; } \
        >"$log" 2>&1; then
        cat "$log" >&2
        echo "dev.sh: installing hushwire into $venv failed (log above, also in $log)" >&2
        exit 1
    fi
}

# --- Debian packages the tests use ---------------------------------------------------
# PostgreSQL and Redis: tests/services.py starts its own servers in temp dirs on loopback
# ports. promtool (package `prometheus`) validates the metrics exposition, systemd-analyze
# (package `systemd`) checks the unit file. Installed only when missing, as root with
# apt-get. Without them those tests skip and say why; under CI=true the PostgreSQL and
# Redis tests fail instead, so CI never passes by testing nothing.
install_test_packages() {
    local missing=()
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v promtool >/dev/null || missing+=(prometheus)
    command -v systemd-analyze >/dev/null || missing+=(systemd)
    command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "dev.sh: not root with apt-get, not installing ${missing[*]}: their tests skip" >&2
        return 0
    fi
    echo "dev.sh: installing ${missing[*]} (Debian packages) for the tests" >&2
    if ! { apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
            --no-install-recommends "${missing[@]}"; } >/dev/null; then
        echo "dev.sh: could not install ${missing[*]}; their tests skip (or fail under CI)" >&2
    fi
}

case "${1:-}" in
relay)
    shift
    setup
    [ -f users.db ] || cp users.db.example users.db
    exec "$venv/bin/hushwire-relay" --db users.db "$@"
    ;;
test)
    shift
    setup
    install_test_packages
    "$venv/bin/ruff" check .
    "$venv/bin/ruff" format --check .
    set +e
    "$venv/bin/python" -m pytest "$@"
    rc=$?
    set -e
    # pytest exit 5 means nothing was collected: that is a failure, never a pass.
    if [ "$rc" -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi
    exit "$rc"
    ;;
*)
    echo "usage: ./dev.sh relay [relay flags...] | ./dev.sh test [pytest args...]" >&2
    exit 2
    ;;
esac
