#!/usr/bin/env bash
# The test command (README, CI): formatting, lints, every test, and a check of
# every example config. Works on a fresh Debian machine as root with the Rust
# toolchain and Python 3 with pip. Real peers: our Modbus simulator (in-process),
# pymodbus (installed below), a pseudo terminal for RTU; SQLite is embedded.
# When a test needs a real service (Mosquitto, VictoriaMetrics, Alertmanager),
# install and start it on loopback in the "services" section below, and stop it
# in `cleanup`.
set -euo pipefail
cd "$(dirname "$0")/.."

cleanup() {
  :  # stop services started below
}
trap cleanup EXIT

# ---- services and third-party peers -------------------------------------------
# pymodbus: the third-party Modbus server of the interop test (PyPI, pinned).
if ! python3 -c 'import pymodbus, sys; sys.exit(pymodbus.__version__ != "3.16.1")' 2>/dev/null; then
  echo "== installing pymodbus 3.16.1 (PyPI)"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3-pip
  fi
  python3 -m pip install --quiet --root-user-action=ignore 'pymodbus==3.16.1' \
    || python3 -m pip install --quiet --root-user-action=ignore --break-system-packages 'pymodbus==3.16.1'
fi

# ---- checks -----------------------------------------------------------------
echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (pedantic, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked

echo "== adit check config/*.toml"
cargo run --locked --quiet -p adit -- check -c config/*.toml
