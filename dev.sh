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
