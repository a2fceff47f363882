#!/usr/bin/env bash
# The whole test suite from a fresh clone: local .venv, Debian's chromium, ruff, pytest.
# Extra arguments go to pytest (e.g. `bash tests/run.sh tests/optim -x`).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing Debian's chromium for the real-browser tests"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "chromium is missing and this is not root: the real-browser tests will be skipped" >&2
    fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Two test processes (pytest-xdist), a test file's tests in one of them: the browser tests wait
# on chromium and their servers while the other process computes (12 min here against 17 in
# one process). Not more: each process starts its own servers and Ray (`-n 0`: one process).
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
