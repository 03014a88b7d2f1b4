#!/usr/bin/env bash
# The Python client's tests, in one command (from anywhere):
#
#     bash clients/python/test.sh [pytest arguments]
#
# Makes a virtualenv if needed (DURABLE_ITERATOR_VENV, default <repo>/target/python-venv) with
# the interpreter in PYTHON (default python3, 3.10 or newer), installs the package editable with
# its dev extra (again only when pyproject.toml changed), then runs mypy --strict on the package
# and the tests, then pytest. The integration tests start the server binary in
# DURABLE_ITERATOR_BIN (default <repo>/target/debug/durable-iterator) and skip, saying so, when
# it is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${DURABLE_ITERATOR_VENV:-$repo/target/python-venv}"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "test.sh: $python is not Python 3.10 or newer (set PYTHON)" >&2
        exit 1
    fi
    echo "test.sh: creating the virtualenv $venv" >&2
    "$python" -m venv "$venv"
fi

# Reinstall only when the dependencies may have changed: the editable install follows the
# source by itself.
stamp="$venv/.durable-iterator-installed"
wanted="$(cat "$here/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
    echo "test.sh: installing durable-iterator[dev] into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here[dev]"
    echo "$wanted" > "$stamp"
fi

export DURABLE_ITERATOR_BIN="${DURABLE_ITERATOR_BIN:-$repo/target/debug/durable-iterator}"
cd "$here"
echo "test.sh: mypy --strict" >&2
"$venv/bin/python" -m mypy --strict src tests
echo "test.sh: pytest (server: $DURABLE_ITERATOR_BIN)" >&2
exec "$venv/bin/python" -m pytest -rs "$@"
