#!/usr/bin/env bash
# Runs every test of the TypeScript client from a fresh clone: installs what is missing (the
# locked npm packages; Debian's Chromium for the browser tests), then `npm test`.
#
# The integration and browser tests need the server binaries; point at them with
#   DURABLE_ITERATOR_BIN       (default <repo>/target/debug/durable-iterator)
#   DURABLE_ITERATOR_CHAT_BIN  (default <repo>/target/debug/examples/chat)
# (cargo build --bin durable-iterator --example chat in the repository builds both). Tests whose
# binary (or Chromium, or a server with `serve --dev-tls`) is missing are skipped, and say why;
# with CI=true each missing one fails the run instead.
set -euo pipefail
cd "$(dirname "$0")"

# npm ci when node_modules is missing or the lockfile changed since the last install here.
stamp=node_modules/.test-sh-lock
if [ ! -d node_modules ] || ! cmp -s package-lock.json "$stamp"; then
  npm ci
  cp package-lock.json "$stamp"
fi

# The browser tests drive Debian's Chromium; nothing downloads a browser of its own.
if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM_PATH:-}" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update && apt-get install -y chromium
  else
    sudo apt-get update && sudo apt-get install -y chromium
  fi
fi

npm test
