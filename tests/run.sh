#!/usr/bin/env bash
# The test command (README, CI): formatting, lints, every test, and a check of
# every example config. Works on a fresh Debian machine as root with the Rust
# toolchain; the foundation's tests need no outside service (the Modbus peer is
# our simulator, SQLite is embedded). When a test needs a real service
# (Mosquitto, VictoriaMetrics, Alertmanager, pymodbus), install and start it on
# loopback in the "services" section below, and stop it in `cleanup`.
set -euo pipefail
cd "$(dirname "$0")/.."

cleanup() {
  :  # stop services started below
}
trap cleanup EXIT

# ---- services ---------------------------------------------------------------
# (none yet)

# ---- checks -----------------------------------------------------------------
echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (pedantic, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked

echo "== adit check config/*.toml"
cargo run --locked --quiet -p adit -- check -c config/*.toml
