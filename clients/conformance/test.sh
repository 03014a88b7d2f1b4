#!/usr/bin/env bash
# The conformance suite, in one command (from anywhere):
#
#     bash clients/conformance/test.sh [pytest arguments]     # e.g. -k python
#
# Drives each client's `subscribe` command (Rust, TypeScript, Python) through the same faults
# against the real server, and runs every grpcurl command of README.md through a grpcurl
# stand-in (test_readme.py; `-k readme` runs only that). It makes sure the commands can run,
# without building Rust:
#   - the server binary and the Rust command: DURABLE_ITERATOR_BIN (default
#     <repo>/target/debug/durable-iterator; `cargo build --bin durable-iterator` makes it);
#   - the chat example of the README's channel objects: DURABLE_ITERATOR_CHAT_BIN (default
#     examples/chat beside that binary; `cargo build --example chat` makes it);
#   - Python: the virtualenv DURABLE_ITERATOR_VENV (default <repo>/target/python-venv, the one
#     clients/python/test.sh makes), created with PYTHON (default python3, 3.10 or newer) and
#     `pip install -e clients/python` when missing;
#   - TypeScript: `npm ci` in clients/typescript when node_modules is missing, `npm run build`
#     when dist is missing.
# Then it installs the suite's own needs (requirements.txt: pytest, pytest-timeout, grpcio,
# grpcio-reflection, mypy) into that virtualenv, type-checks the suite (mypy --strict) and
# runs pytest.
# With CI=true a client command or binary that cannot run fails the suite instead of skipping.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${DURABLE_ITERATOR_VENV:-$repo/target/python-venv}"
python="${PYTHON:-python3}"
export DURABLE_ITERATOR_BIN="${DURABLE_ITERATOR_BIN:-$repo/target/debug/durable-iterator}"
export DURABLE_ITERATOR_VENV="$venv"

if [[ ! -x "$DURABLE_ITERATOR_BIN" ]]; then
    echo "test.sh: $DURABLE_ITERATOR_BIN is missing (cargo build --bin durable-iterator);" \
        "the tests will $([[ "${CI:-}" == "true" ]] && echo fail || echo skip)" >&2
fi
chat="${DURABLE_ITERATOR_CHAT_BIN:-$(dirname "$DURABLE_ITERATOR_BIN")/examples/chat}"
if [[ ! -x "$chat" ]]; then
    echo "test.sh: $chat is missing (cargo build --example chat);" \
        "its README test will $([[ "${CI:-}" == "true" ]] && echo fail || echo skip)" >&2
fi

# ---- Python: the venv, the client (editable), the suite's requirements ----------------------
if [[ ! -x "$venv/bin/python" ]]; then
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "test.sh: $python is not Python 3.10 or newer (set PYTHON)" >&2
        exit 1
    fi
    echo "test.sh: creating the virtualenv $venv" >&2
    "$python" -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import durable_iterator' 2>/dev/null; then
    echo "test.sh: installing clients/python into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$repo/clients/python"
fi
stamp="$venv/.conformance-requirements"
wanted="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
    echo "test.sh: installing the suite's requirements into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    echo "$wanted" > "$stamp"
fi

# ---- TypeScript: the locked packages and the built command ----------------------------------
ts="$repo/clients/typescript"
if command -v node >/dev/null && command -v npm >/dev/null; then
    if [[ ! -d "$ts/node_modules" ]]; then
        echo "test.sh: npm ci in clients/typescript" >&2
        (cd "$ts" && npm ci)
    fi
    # Built when missing (npm ci builds too, through `prepare`); after changing the client's
    # source, rebuild it (npm run build, or its own test.sh, whose `npm test` builds first).
    if [[ ! -f "$ts/dist/src/cli.js" ]]; then
        echo "test.sh: npm run build in clients/typescript" >&2
        (cd "$ts" && npm run build)
    fi
else
    echo "test.sh: node/npm not found: the TypeScript client cannot run;" \
        "its tests will $([[ "${CI:-}" == "true" ]] && echo fail || echo skip)" >&2
fi

cd "$here"
echo "test.sh: mypy --strict (the suite)" >&2
"$venv/bin/python" -m mypy
echo "test.sh: pytest (server and Rust command: $DURABLE_ITERATOR_BIN)" >&2
exec "$venv/bin/python" -m pytest "$@"
