#!/usr/bin/env bash
# Checks the deploy kit without starting it: every YAML file parses, the
# compose file's references resolve, Alertmanager's config and routes
# (amtool), Prometheus' config and rules (promtool, when installed), the
# systemd unit (systemd-analyze, when available), and the stack's adit config
# (`adit check`, binary from $ADIT, default target/debug/adit).
# The dashboards' queries are checked by `cargo test -p adit --test deploy_kit`.
set -euo pipefail
cd "$(dirname "$0")/.."
ADIT="${ADIT:-target/debug/adit}"

echo "== YAML parses; compose references resolve; dashboards are JSON"
python3 - <<'PY'
import json, pathlib, sys
import yaml

deploy = pathlib.Path("deploy")
for p in sorted(deploy.rglob("*")):
    if p.suffix in (".yml", ".yaml"):
        yaml.safe_load(p.read_text())
        print(f"  ok  {p}")

problems = []
compose = yaml.safe_load((deploy / "compose.yaml").read_text())
services = compose["services"]
volumes = set(compose.get("volumes") or {})
for name, svc in services.items():
    deps = svc.get("depends_on") or []
    for dep in (deps if isinstance(deps, list) else deps.keys()):
        if dep not in services:
            problems.append(f"{name}: depends_on unknown service {dep}")
    for v in svc.get("volumes") or []:
        source = v.split(":", 1)[0]
        if source.startswith((".", "/")):
            if not (deploy / source).exists():
                problems.append(f"{name}: mounts {source}, which does not exist under deploy/")
        elif source not in volumes:
            problems.append(f"{name}: volume {source} is not declared under volumes:")
    build = svc.get("build")
    if build:
        dockerfile = deploy / build["context"] / build["dockerfile"]
        if not dockerfile.exists():
            problems.append(f"{name}: {dockerfile} does not exist")
if problems:
    print("\n".join("  FAIL " + p for p in problems))
    sys.exit(1)
print(f"  ok  compose.yaml: {len(services)} services, {len(volumes)} volumes, every mount and dependency resolves")

for p in sorted((deploy / "grafana" / "dashboards").glob("*.json")):
    json.loads(p.read_text())
    print(f"  ok  {p}")
PY

echo "== shell scripts parse"
sh -n deploy/questdb/apply-schema.sh && echo "  ok  deploy/questdb/apply-schema.sh"

echo "== Alertmanager (amtool)"
if command -v amtool >/dev/null 2>&1; then
  amtool check-config deploy/alertmanager/alertmanager.yml
  route() {  # route EXPECTED_RECEIVERS LABEL=VALUE...
    local want="$1"; shift
    amtool config routes test --config.file=deploy/alertmanager/alertmanager.yml \
      --verify.receivers="$want" "$@" >/dev/null 2>&1 \
      || { echo "  FAIL $* should route to $want"; exit 1; }
    echo "  ok  $* -> $want"
  }
  route pager,control-room alertname=AditDown severity=critical instance=adit:9464
  route pager,control-room alertname=CoCloseTunnel severity=critical site=s device=d point=p
  route control-room alertname=CoCongested severity=warning site=s
  route deadmansswitch-prometheus alertname=PrometheusHeartbeat severity=none
  route deadmansswitch-adit alertname=AditWatchdogHeartbeat severity=none site=s
else
  echo "  amtool not installed, skipped (Debian: prometheus-alertmanager)"
fi

echo "== Prometheus (promtool)"
if command -v promtool >/dev/null 2>&1; then
  promtool check config deploy/prometheus/prometheus.yml
  promtool check rules deploy/prometheus/adit-alerts.yml
  promtool test rules deploy/prometheus/adit-alerts.test.yml
else
  echo "  promtool not installed, skipped (Debian: prometheus)"
fi

echo "== systemd unit (systemd-analyze verify)"
if command -v systemd-analyze >/dev/null 2>&1; then
  unit=deploy/systemd/adit.service
  if [ -x "$ADIT" ]; then
    # Verify a copy that runs the binary under test, so that nothing is
    # tolerated: the unit's /usr/local/bin/adit does not exist here.
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    sed "s#/usr/local/bin/adit#$(realpath "$ADIT")#g" "$unit" >"$tmp/adit.service"
    out="$(systemd-analyze verify "$tmp/adit.service" 2>&1)" || { echo "$out"; exit 1; }
    if [ -n "$out" ]; then echo "$out"; exit 1; fi
    echo "  ok  $unit (ExecStart pointed at $ADIT)"
  else
    # Tolerate only the complaint that /usr/local/bin/adit is missing.
    out="$(systemd-analyze verify "$unit" 2>&1 || true)"
    rest="$(printf '%s\n' "$out" | grep -v 'Command /usr/local/bin/adit is not executable' | grep -v '^$' || true)"
    if [ -n "$rest" ]; then echo "$rest"; exit 1; fi
    echo "  ok  $unit (only: /usr/local/bin/adit is not installed here)"
  fi
  if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
    systemd-analyze security --offline=yes "$unit" 2>/dev/null | tail -n 1 | sed 's/^/  /'
  fi
else
  echo "  systemd-analyze not available, skipped"
fi

echo "== adit check (deploy/adit/adit.toml, with $ADIT)"
if [ ! -x "$ADIT" ]; then
  echo "  FAIL $ADIT not found: build it (cargo build -p adit) or set ADIT=path/to/adit"
  exit 1
fi
"$ADIT" check -c deploy/adit/adit.toml

echo "== deploy kit: all checks passed"
