#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: the Rust workspace (server, contract, Rust client,
# benchmark smoke test), then each client's own suite (Python: pytest in a venv; TypeScript:
# npm test, Node and headless Chromium) against the server binary the Rust tests built, then the
# conformance suite that drives every client's `subscribe` command through the same faults.
set -euo pipefail
cd "$(dirname "$0")"

# The Redis store's tests run against Debian's redis-server, started by the tests themselves.
if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update && apt-get install -y redis-server
  else
    sudo apt-get update && sudo apt-get install -y redis-server
  fi
fi

cargo test --workspace

# What the client suites run: the binaries `cargo test` just built.
export DURABLE_ITERATOR_BIN="$PWD/target/debug/durable-iterator"
export DURABLE_ITERATOR_CHAT_BIN="$PWD/target/debug/examples/chat"
cargo build --bin durable-iterator --example chat

for suite in clients/python clients/typescript clients/conformance; do
  if [ -f "$suite/test.sh" ]; then
    echo "== $suite"
    bash "$suite/test.sh"
  fi
done
