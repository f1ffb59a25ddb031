#!/usr/bin/env bash
# Checks deploy/prometheus/ with the tools that consume it:
#   1. promtool check rules, promtool test rules (the alert unit tests);
#   2. a real nexus (two shards, admin on loopback, joined to a real
#      nats-server so the cluster series exist) under a short load, scraped
#      by a real Prometheus every second; then every dashboard panel's query
#      and both sides of every alert expression's comparison must return
#      data (promtool query instant). A renamed metric fails the build.
# Stops everything it started. Needs prometheus/promtool (Debian
# `prometheus`) and nats-server (Debian `nats-server`).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v promtool >/dev/null || { echo "prometheus-check: promtool missing (apt-get install prometheus)"; exit 1; }
prometheus_bin=$(command -v prometheus || echo /usr/bin/prometheus)
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)

(cd deploy/prometheus && promtool check rules easechat.rules.yml && promtool test rules easechat.test.yml)

cargo build --release --bin ease_chat_nexus --example stress
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nats_port=$(free_port) nexus_port=$(free_port) admin_port=$(free_port) prom_port=$(free_port)

"$nats_bin" -a 127.0.0.1 -p "$nats_port" > "$work/nats.log" 2>&1 &
pids+=($!)
# Each start is awaited, and a start that never comes fails with its log
# (a fresh CI machine can be slow; a fixed sleep raced it once).
wait_for() { # FILE PATTERN WHAT
  for _ in $(seq 1 300); do grep -q "$2" "$1" && return 0; sleep 0.1; done
  echo "prometheus-check: $3 did not start within 30 s:"; cat "$1"; exit 1
}
wait_for "$work/nats.log" "Server is ready" nats-server
# wss on too, so the certificate series exist (a throwaway self-signed one).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=localhost \
  -keyout "$work/tls.key" -out "$work/tls.pem" 2> /dev/null
tls_port=$(free_port)
target/release/ease_chat_nexus "127.0.0.1:$nexus_port" --cores 2 --admin "127.0.0.1:$admin_port" \
  --nats "nats://127.0.0.1:$nats_port" --tls-listen "127.0.0.1:$tls_port" \
  --tls-cert "$work/tls.pem" --tls-key "$work/tls.key" < /dev/null > /dev/null 2> "$work/nexus.log" &
pids+=($!)
wait_for "$work/nexus.log" "ease_chat_nexus: listening" "the nexus"

cat > "$work/prometheus.yml" <<YML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [$(pwd)/deploy/prometheus/easechat.rules.yml]
scrape_configs:
  - job_name: easechat
    static_configs: [{targets: ["127.0.0.1:$admin_port"]}]
YML
"$prometheus_bin" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$prom_port" > "$work/prometheus.log" 2>&1 &
pids+=($!)

# A short load: 50 clients, 10 publishers, 1,000 msg/s for 12 s.
target/release/examples/stress --url "ws://127.0.0.1:$nexus_port" --clients 50 --publishers 10 \
  --channels 5 --duration 12 --warmup 1 --target-rate 1000 > "$work/stress.txt" 2>&1 || {
  echo "prometheus-check: the load failed"; cat "$work/stress.txt"; tail -40 "$work/nexus.log"; exit 1; }

python3 - "$prom_port" <<'PY'
import json, re, subprocess, sys
port = sys.argv[1]
url = f"http://127.0.0.1:{port}"
exprs = []
dash = json.load(open("deploy/prometheus/easechat-dashboard.json"))
for panel in dash["panels"]:
    for target in panel["targets"]:
        exprs.append((f'panel "{panel["title"]}"', target["expr"]))
for line in open("deploy/prometheus/easechat.rules.yml"):
    m = re.match(r"\s*- alert: (\S+)", line)
    if m:
        alert = m.group(1)
    m = re.match(r"\s*expr: (.*)$", line)
    if m:
        # Both sides of the top-level comparison: each must have data now.
        for side in re.split(r"\s(?:==|!=|>=|<=|>|<)\s", m.group(1)):
            if re.search(r"[a-z_]{3,}", side):
                exprs.append((f"alert {alert}", side.strip()))
failed = 0
for where, expr in exprs:
    out = subprocess.run(["promtool", "query", "instant", "-o", "json", url, expr],
                         capture_output=True, text=True)
    try:
        result = json.loads(out.stdout) if out.stdout.strip() else []
    except json.JSONDecodeError:
        result = []
    if out.returncode != 0 or not result:
        failed += 1
        print(f"prometheus-check: NO DATA for {where}: {expr} {out.stderr.strip()}")
print(f"prometheus-check: {len(exprs) - failed} of {len(exprs)} queries returned data")
sys.exit(1 if failed else 0)
PY
echo "prometheus-check: ok (rules checked and unit-tested; every dashboard and alert query returns data from a real nexus)"
