#!/usr/bin/env bash
# Checks deploy/prometheus/ with the tools that consume it:
#   1. promtool check rules, promtool test rules (the alert unit tests);
#   2. a real nexus (two shards, admin on loopback, joined to a real
#      nats-server so the cluster series exist) under a short load, scraped
#      by a real Prometheus every second; then every dashboard panel's query
#      (rows' nested panels included) and both sides of every rule's
#      comparison, as Prometheus itself loaded the rules (/api/v1/rules, so
#      multi-line `expr: |` needs no YAML parser here), must return data
#      (promtool query instant). A renamed metric fails the build.
# Stops everything it started. Needs prometheus/promtool (Debian
# `prometheus`) and nats-server (Debian `nats-server`).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v promtool >/dev/null || { echo "prometheus-check: promtool missing (apt-get install prometheus)"; exit 1; }
prometheus_bin=$(command -v prometheus || echo /usr/bin/prometheus)
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)

# promtool says how many rules the file holds; Prometheus must load as many.
checked=$(cd deploy/prometheus && promtool check rules easechat.rules.yml)
echo "$checked"
rule_count=$(sed -n 's/.*SUCCESS: \([0-9]*\) rules found.*/\1/p' <<< "$checked")
[ -n "$rule_count" ] || { echo "prometheus-check: no rule count in promtool's output"; exit 1; }
(cd deploy/prometheus && promtool test rules easechat.test.yml)

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

# The queries to check. Panels: every panel of the dashboard, rows' nested
# `panels` included, read with the json module. Alert and recording rules:
# as the real Prometheus parsed and loaded them (its /api/v1/rules), so YAML
# block scalars (`expr: |`), quoting and folding need no YAML parser here,
# and a rules file Prometheus did not load is caught by the count.
python3 - "$prom_port" "$rule_count" deploy/prometheus/easechat-dashboard.json <<'PY'
import json, re, subprocess, sys, time, urllib.request

port, rule_count, dashboard = sys.argv[1], int(sys.argv[2]), sys.argv[3]
url = f"http://127.0.0.1:{port}"
exprs = []  # (where, expr)

# Grafana's own interval variables, as a 1 s scrape makes them.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
GRAFANA_VARS.update({"${" + k[1:] + "}": v for k, v in list(GRAFANA_VARS.items())})

def panels(items):
    for panel in items or []:
        yield panel
        # A row (collapsed or not) holds its panels in `panels`.
        yield from panels(panel.get("panels"))

dash = json.load(open(dashboard))
queried = 0
for panel in panels(dash.get("panels")):
    targets = [t for t in panel.get("targets") or [] if t.get("expr")]
    if panel.get("type") not in ("row", "text") and not targets:
        print(f'prometheus-check: panel "{panel.get("title")}" has no query')
        sys.exit(1)
    queried += bool(targets)
    for target in targets:
        expr = target["expr"]
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        if "$" in expr:
            print(f'prometheus-check: panel "{panel.get("title")}": unknown variable in {expr}')
            sys.exit(1)
        exprs.append((f'panel "{panel.get("title")}"', expr))
if queried == 0:
    print("prometheus-check: the dashboard has no panel with a query")
    sys.exit(1)

def api(path):
    with urllib.request.urlopen(url + path, timeout=5) as r:
        return json.load(r)

rules = []
for _ in range(300):
    try:
        rules = [r for g in api("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
    except OSError:
        rules = []
    if len(rules) >= rule_count:
        break
    time.sleep(0.1)
if len(rules) != rule_count:
    print(f"prometheus-check: Prometheus loaded {len(rules)} rules, promtool found {rule_count}")
    sys.exit(1)

def split_top(expr, pattern):
    """Splits `expr` where `pattern` matches outside (), {}, [] and quotes;
    returns [(operator before the part or None, part)]."""
    parts, depth, quote, start, i, op = [], 0, None, 0, 0, None
    regex = re.compile(pattern)
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            m = regex.match(expr, i)
            if m and m.group(0).strip():
                parts.append((op, expr[start:i]))
                op = m.group(0).strip()
                i = start = m.end()
                continue
        i += 1
    parts.append((op, expr[start:]))
    return parts

# Vector matching after a binary operator: not a query of its own.
MODIFIERS = re.compile(r"^\s*(?:bool\b\s*)?(?:(?:on|ignoring)\s*\([^)]*\)\s*)?"
                       r"(?:(?:group_left|group_right)\s*(?:\([^)]*\))?\s*)?")
SET_OPS = r"(?<![A-Za-z0-9_:])(?:and|or|unless)(?![A-Za-z0-9_:])"
COMPARISONS = r"==|!=|>=|<=|>|<"

for rule in rules:
    where = f'{rule["type"]} rule {rule.get("name")}'
    # Comparisons bind tighter than and/or/unless: the operands of `and`
    # must all have data; those after `or` or `unless` may be empty.
    for set_op, operand in split_top(rule["query"], SET_OPS):
        if set_op in ("or", "unless"):
            continue
        # Both sides of a comparison: each must have data now (the
        # comparison itself is usually false on a healthy nexus).
        for _, side in split_top(MODIFIERS.sub("", operand), COMPARISONS):
            side = MODIFIERS.sub("", side).strip()
            if re.search(r"[A-Za-z_:]", side):
                exprs.append((where, side))

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
print(f"prometheus-check: {len(exprs) - failed} of {len(exprs)} queries returned data "
      f"({queried} panels, {len(rules)} rules)")
sys.exit(1 if failed else 0)
PY
echo "prometheus-check: ok (rules checked and unit-tested; every dashboard and alert query returns data from a real nexus)"
