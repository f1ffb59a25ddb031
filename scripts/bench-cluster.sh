#!/usr/bin/env bash
# EaseChat Nexus cluster benchmark: a NATS server and two nexus nodes with
# one core each; publishers connect to node A, every other client (the
# subscribers) to node B, at 400 and 4,000 msg/s; then again with
# --history '*' on both nodes and JetStream on the NATS server (history
# shared through JetStream, issue 24). The same loads then run
# against a single node (no NATS) for comparison. Reports p50/p99 latency
# per run and nats-server's CPU; writes bench-results/cluster-<date>-<host>.md
# with raw .json / .hgrm / .txt files beside it. Stops everything it started.
#
#   scripts/bench-cluster.sh                  # 30 s windows, release build
#   scripts/bench-cluster.sh --duration 10
#   scripts/bench-cluster.sh --smoke          # 1 s windows, debug build: checks the script only
#
# CPU placement (taskset lists; empty = no pinning): A_CPUS, B_CPUS,
# NATS_CPUS, LOAD_CPUS. Defaults on >= 4 CPUs: 0, 1, 2, 3; else unpinned.
# Ports: BENCH_PORT (node A; node B is +1), NATS_PORT, NATS_MONITOR_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=30
warmup=2
profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --smoke) duration=1; warmup=0.5; profile=debug; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

nats_bin=$(command -v nats-server || true)
[ -z "$nats_bin" ] && [ -x /usr/sbin/nats-server ] && nats_bin=/usr/sbin/nats-server
if [ -z "$nats_bin" ]; then
  echo "nats-server not found: apt-get install nats-server" >&2; exit 1
fi

ncpu=$(nproc)
if [ "$ncpu" -ge 4 ]; then
  A_CPUS=${A_CPUS-0}; B_CPUS=${B_CPUS-1}; NATS_CPUS=${NATS_CPUS-2}; LOAD_CPUS=${LOAD_CPUS-3}
else
  A_CPUS=${A_CPUS-}; B_CPUS=${B_CPUS-}; NATS_CPUS=${NATS_CPUS-}; LOAD_CPUS=${LOAD_CPUS-}
fi
port_a=${BENCH_PORT:-16520}
port_b=$((port_a + 1))
nats_port=${NATS_PORT:-14322}
nats_monitor=${NATS_MONITOR_PORT:-18322}
date_tag=$(date -u +%Y-%m-%d)
host=$(hostname -s 2>/dev/null || echo host)
tag="cluster-${date_tag}-${host}"
[ "$profile" = debug ] && tag="${tag}-smoke"
out_dir="bench-results/$tag"
report="bench-results/$tag.md"
mkdir -p "$out_dir"
ulimit -n 65536 2>/dev/null || true
ulimit -l unlimited 2>/dev/null || true

if [ "$profile" = release ]; then
  cargo build --release --bin ease_chat_nexus --example stress
else
  cargo build --bin ease_chat_nexus --example stress
fi
nexus_bin=target/$profile/ease_chat_nexus
stress_bin=target/$profile/examples/stress

# The taskset prefix for a CPU list (none when empty). Commands are run
# directly, never through a shell function, so $! is the process itself.
pin() { if [ -n "$1" ]; then echo "taskset -c $1"; fi; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; fi
  done
}
trap cleanup EXIT

wait_port() { # port log
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on port $1:" >&2; cat "$2" >&2; exit 1
}

start_nats() { # extra nats-server flags...
  $(pin "$NATS_CPUS") "$nats_bin" -a 127.0.0.1 -p "$nats_port" -m "$nats_monitor" "$@" \
    > "$out_dir/nats.log" 2>&1 &
  nats_pid=$!; pids+=("$nats_pid")
  wait_port "$nats_port" "$out_dir/nats.log"
}

start_node() { # name cpus port extra... (sets node_pid)
  local name=$1 cpus=$2 port=$3; shift 3
  $(pin "$cpus") "$nexus_bin" "127.0.0.1:$port" --cores 1 --log warn "$@" \
    < /dev/null > /dev/null 2> "$out_dir/$name.log" &
  node_pid=$!; pids+=("$node_pid")
  wait_port "$port" "$out_dir/$name.log"
}

stop() { kill -TERM "$1"; wait "$1" 2>/dev/null || true; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

base=(--clients 100 --publishers 10 --channels 10 --message-size 64
      --duration "$duration" --warmup "$warmup")
rows=()
# run NAME SUBSCRIBE_URL PUBLISH_URL RATE
run() {
  local name=$1 url=$2 publish_url=$3 rate=$4 status=0
  echo; echo "=== $name: subscribers on $url, publishers on $publish_url, $rate msg/s"
  local nats_before=""; [ -n "${nats_pid:-}" ] && nats_before=$(ticks "$nats_pid")
  local started; started=$(date +%s.%N)
  $(pin "$LOAD_CPUS") "$stress_bin" --url "$url" --publish-url "$publish_url" \
    "${base[@]}" --target-rate "$rate" --name-prefix "$name" \
    --json "$out_dir/$name.json" --hgrm "$out_dir/$name.hgrm" > "$out_dir/$name.txt" 2>&1 || status=$?
  local wall; wall=$(python3 -c "import sys; print(float(sys.argv[1]) - float(sys.argv[2]))" "$(date +%s.%N)" "$started")
  local nats_cpu="-"
  if [ -n "$nats_before" ]; then
    nats_cpu=$(python3 -c "import sys; print(f'{int(sys.argv[1]) / 100 / float(sys.argv[2]):.1%}')" \
      "$(( $(ticks "$nats_pid") - nats_before ))" "$wall")
  fi
  cat "$out_dir/$name.txt"
  local verdict=ok; [ $status -ne 0 ] && verdict="FAILED (exit $status)"
  rows+=("$name|$rate|$(python3 - "$out_dir/$name.json" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    l = d["latency_ms"]
    print(f'{d["publish_rate"]:.0f}|{d["deliveries_per_second"]:.0f}|{l["p50"]:.3f}|{l["p99"]:.3f}|{l["max"]:.3f}|{d["lost"]}|{d["out_of_order"]}')
except Exception as e:
    print(f'-|-|-|-|-|-|- ({e})')
PY
)|$nats_cpu|$verdict")
}

# Two nodes joined by NATS: publish on A, subscribe on B.
start_nats
start_node node-a "$A_CPUS" "$port_a" --nats "nats://127.0.0.1:$nats_port" --node-id bench-a
node_a=$node_pid
start_node node-b "$B_CPUS" "$port_b" --nats "nats://127.0.0.1:$nats_port" --node-id bench-b
node_b=$node_pid
for rate in 400 4000; do
  run "cluster-$rate" "ws://127.0.0.1:$port_b" "ws://127.0.0.1:$port_a" "$rate"
done
stop "$node_a"; stop "$node_b"; stop "$nats_pid"; nats_pid=""

# The same, with every channel keeping history shared through JetStream
# (issue 24): each publish is numbered in JetStream (one round trip, one in
# flight per channel per node) before any node delivers it.
js_store=$(mktemp -d)
start_nats -js -sd "$js_store"
start_node node-a "$A_CPUS" "$port_a" --nats "nats://127.0.0.1:$nats_port" --node-id bench-a --history '*'
node_a=$node_pid
start_node node-b "$B_CPUS" "$port_b" --nats "nats://127.0.0.1:$nats_port" --node-id bench-b --history '*'
node_b=$node_pid
sleep 1 # the history stream is set up once connected
for rate in 400 4000; do
  run "cluster-history-$rate" "ws://127.0.0.1:$port_b" "ws://127.0.0.1:$port_a" "$rate"
done
stop "$node_a"; stop "$node_b"; stop "$nats_pid"; nats_pid=""
rm -rf "$js_store"

# The same loads on a single node without NATS.
start_node single "$A_CPUS" "$port_a"
single=$node_pid
for rate in 400 4000; do
  run "single-$rate" "ws://127.0.0.1:$port_a" "ws://127.0.0.1:$port_a" "$rate"
done
stop "$single"

{
  echo "# Cluster benchmark $date_tag on $host"
  echo
  echo "Machine: $ncpu CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), kernel $(uname -r); nats-server $("$nats_bin" --version | awk '{print $2}')."
  echo "Command: \`scripts/bench-cluster.sh${*:+ $*}\` ($profile build, ${duration} s windows, commit $(git rev-parse --short HEAD))."
  echo "Load: \`examples/stress ${base[*]}\`; cluster rows connect the 10 publishers to node A and the 90 other clients to node B (each node --cores 1); single rows put everyone on one node."
  echo "CPUs (taskset; empty = unpinned): node A '${A_CPUS}', node B '${B_CPUS}', nats-server '${NATS_CPUS}', load '${LOAD_CPUS}'. nats-server CPU is its CPU time over the stress run, as a share of one core."
  echo
  echo "| run | target msg/s | publish/s | deliveries/s | p50 ms | p99 ms | max ms | lost | reordered | nats-server CPU | result |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for r in "${rows[@]}"; do echo "| ${r} |"; done
  echo
  echo "Raw results: \`$out_dir/\`."
} > "$report"
echo; cat "$report"
