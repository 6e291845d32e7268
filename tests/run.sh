#!/usr/bin/env bash
# The test command (README, CI): formatting, lints, every test, and a check of
# every example config. Works on a fresh Debian machine as root with the Rust
# toolchain and Python 3 with pip. Real peers: our Modbus simulator (in-process),
# pymodbus and victoria-metrics (installed below; the tests start and stop
# their own instances on free loopback ports), a pseudo terminal for RTU, a
# small tmpfs for the disk-full test (root); SQLite is embedded. When a test
# needs another real service, install it in the "services" section below
# (today: pymodbus, paho-mqtt, pysparkplug, asyncua, prometheus-alertmanager,
# mosquitto, openssl, victoria-metrics, chromium + chromium-driver,
# prometheus for promtool, python3-yaml).
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

# paho-mqtt and pysparkplug: the independent MQTT JSON and Sparkplug B
# publishers of the MQTT interop test (PyPI, pinned).
if ! python3 -c 'import paho.mqtt, pysparkplug, sys; from importlib.metadata import version as v; sys.exit(v("paho-mqtt") != "1.6.1" or v("pysparkplug") != "0.6.1")' 2>/dev/null; then
  echo "== installing paho-mqtt 1.6.1 and pysparkplug 0.6.1 (PyPI)"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip
  fi
  python3 -m pip install --quiet --root-user-action=ignore 'paho-mqtt==1.6.1' 'pysparkplug==0.6.1' \
    || python3 -m pip install --quiet --root-user-action=ignore --break-system-packages 'paho-mqtt==1.6.1' 'pysparkplug==0.6.1'
fi

# asyncua: the independent OPC UA server of the OPC UA interop test (PyPI, pinned).
if ! python3 -c 'import sys; from importlib.metadata import version as v; sys.exit(v("asyncua") != "2.1.0")' 2>/dev/null; then
  echo "== installing asyncua 2.1.0 (PyPI)"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip
  fi
  python3 -m pip install --quiet --root-user-action=ignore 'asyncua==2.1.0' \
    || python3 -m pip install --quiet --root-user-action=ignore --break-system-packages 'asyncua==2.1.0'
fi

# prometheus-alertmanager: the alert receiver of the alerting test.
if ! command -v prometheus-alertmanager >/dev/null 2>&1; then
  echo "== installing prometheus-alertmanager (Debian)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager
fi
if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus-alertmanager >/dev/null 2>&1 || true; fi

# mosquitto: the MQTT broker of the MQTT collector and alert tests (each test
# runs its own instance on a free loopback port; the Debian service is
# stopped).
if ! command -v mosquitto >/dev/null 2>&1 && ! [ -x /usr/sbin/mosquitto ]; then
  echo "== installing mosquitto (Debian)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto
fi
if command -v systemctl >/dev/null 2>&1; then systemctl stop mosquitto >/dev/null 2>&1 || true; fi
export PATH="$PATH:/usr/sbin"

# procps: `kill`, with which the tests stop adit and Mosquitto gracefully.
if ! [ -x /bin/kill ] && ! [ -x /usr/bin/kill ]; then
  echo "== installing procps (Debian)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq procps
fi

# openssl: makes the site CA and server certificate of the https alert test.
if ! command -v openssl >/dev/null 2>&1; then
  echo "== installing openssl (Debian)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl
fi

# victoria-metrics: the line-protocol database of the spool/sink tests (Debian
# package; the tests start and stop it themselves on loopback ports).
if ! command -v victoria-metrics >/dev/null 2>&1; then
  echo "== installing victoria-metrics (Debian)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq victoria-metrics
fi
# The Debian package enables a system service; the tests run their own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop victoria-metrics >/dev/null 2>&1 || true; fi

# chromium + chromium-driver: the real browser of the control-room page test
# (the test starts chromedriver and a headless Chromium on a free loopback
# port and kills both).
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium and chromium-driver (Debian)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver
fi

# prometheus (for promtool) and python3-yaml: deploy/validate.sh checks the
# deploy kit's rules, their unit tests, and that every YAML file parses. The
# Debian package's own service is stopped: nothing here needs it running.
if ! command -v promtool >/dev/null 2>&1; then
  echo "== installing prometheus (Debian, for promtool)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi
if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus >/dev/null 2>&1 || true; fi
if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "== installing python3-yaml (Debian)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml
fi

# ---- checks -----------------------------------------------------------------
echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (pedantic, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
# A hung test must fail the run with its output, not eat the CI time limit:
# compile first, then give the tests themselves a hard limit.
cargo test --workspace --locked --no-run
timeout --kill-after=30s 40m cargo test --workspace --locked

echo "== adit check config/*.toml"
cargo run --locked --quiet -p adit -- check -c config/*.toml

echo "== deploy kit (deploy/validate.sh)"
ADIT=target/debug/adit deploy/validate.sh
