#!/usr/bin/env bash
# One entry point for a fresh machine: `./dev.sh relay` or `./dev.sh test`.
set -euo pipefail
cd "$(dirname "$0")"
venv=.venv

setup() {
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --upgrade pip >/dev/null
    "$venv/bin/pip" install -q -e ".[test]"
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
