#!/usr/bin/env bash
# EaseChat Nexus benchmark: builds release, runs each scenario against a
# fresh nexus, prints the histograms and writes bench-results/<date>-<host>.md
# with raw .json / .hgrm files beside it. Stops everything it started.
#
#   scripts/bench.sh                    # every scenario, 30 s each
#   scripts/bench.sh --duration 5       # shorter windows
#   scripts/bench.sh --only baseline    # one scenario (repeatable)
#
# On a machine with few cores the nexus and the load generator are pinned to
# different CPUs: NEXUS_CPUS (default 0) and LOAD_CPUS (default the last CPU).
# The scaling runs with --cores 2 give the nexus every CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=30
only=()
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --only) only+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

ncpu=$(nproc)
NEXUS_CPUS=${NEXUS_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-$((ncpu - 1))}
port=${BENCH_PORT:-16500}
date_tag=$(date -u +%Y-%m-%d)
host=$(hostname -s 2>/dev/null || echo host)
out_dir="bench-results/${date_tag}-${host}"
report="bench-results/${date_tag}-${host}.md"
mkdir -p "$out_dir"

# The connections scenario holds 10,000 sockets open on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
ulimit -l unlimited 2>/dev/null || true

cargo build --release --bin ease_chat_nexus --example stress
nexus_bin=target/release/ease_chat_nexus
stress_bin=target/release/examples/stress

nexus_pid=""
cleanup() { if [ -n "$nexus_pid" ] && kill -0 "$nexus_pid" 2>/dev/null; then kill -TERM "$nexus_pid"; wait "$nexus_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

start_nexus() { # cpus cores ring_size
  local cpus=$1 cores=$2 ring=$3 log="$out_dir/nexus.log"
  taskset -c "$cpus" "$nexus_bin" "127.0.0.1:$port" --cores "$cores" --ring-size "$ring" --log warn \
    < /dev/null > /dev/null 2> "$log" &
  nexus_pid=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nexus did not start:" >&2; cat "$log" >&2; exit 1
}

stop_nexus() { kill -TERM "$nexus_pid"; wait "$nexus_pid" || true; nexus_pid=""; }

rows=()
# run NAME NEXUS_CPUS CORES RING LOAD_CPUS STRESS_ARGS...
run() {
  local name=$1 ncpus=$2 cores=$3 ring=$4 lcpus=$5; shift 5
  if [ ${#only[@]} -gt 0 ] && [[ ! " ${only[*]} " =~ " ${name%%-*} " ]] && [[ ! " ${only[*]} " =~ " ${name} " ]]; then return 0; fi
  echo; echo "=== $name: nexus on CPU $ncpus (--cores $cores --ring-size $ring), load on CPU $lcpus: $*"
  start_nexus "$ncpus" "$cores" "$ring"
  local rss_before; rss_before=$(rss_kib "$nexus_pid")
  local cpu_before; cpu_before=$(awk '{print $14+$15}' "/proc/$nexus_pid/stat")
  local rss_peak=$rss_before
  local status=0 started; started=$(date +%s.%N)
  taskset -c "$lcpus" "$stress_bin" --url "ws://127.0.0.1:$port" "$@" \
    --json "$out_dir/$name.json" --hgrm "$out_dir/$name.hgrm" --name-prefix "$name" \
    > "$out_dir/$name.txt" 2>&1 &
  local stress_pid=$!
  while kill -0 "$stress_pid" 2>/dev/null; do
    local r; r=$(rss_kib "$nexus_pid"); [ "$r" -gt "$rss_peak" ] && rss_peak=$r
    sleep 0.5
  done
  wait "$stress_pid" || status=$?
  local cpu_after; cpu_after=$(awk '{print $14+$15}' "/proc/$nexus_pid/stat")
  local wall; wall=$(python3 -c "import sys; print(round(float(sys.argv[1]) - float(sys.argv[2]), 2))" "$(date +%s.%N)" "$started")
  stop_nexus
  cat "$out_dir/$name.txt"
  echo "--- latency distribution (ms)"; cat "$out_dir/$name.hgrm" | head -40
  echo "nexus: RSS ${rss_before} KiB before, ${rss_peak} KiB peak; CPU $((cpu_after - cpu_before))/100 s in ${wall} s"
  local verdict=ok; [ $status -ne 0 ] && verdict="FAILED (exit $status)"
  rows+=("$name|$*|$ncpus/$cores/$ring|$(python3 - "$out_dir/$name.json" "$rss_before" "$rss_peak" "$((cpu_after - cpu_before))" "$wall" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rss0, rss1, ticks, wall = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
clients = int(d["settings"]["clients"])
per_conn = (rss1 - rss0) * 1024 / clients
l = d["latency_ms"]
print(f'{d["publish_rate"]:.0f}|{d["deliveries_per_second"]:.0f}|{l["p50"]:.3f}|{l["p99"]:.3f}|{l["p99_9"]:.3f}|{l["max"]:.3f}|'
      f'{d["lost"]}|{d["out_of_order"]}|{d["client_cpu_percent"]:.0f}%|{ticks / 100 / wall:.0%}|{rss0}→{rss1} KiB ({per_conn:.0f} B/conn)')
PY
)|$verdict")
}

d=$duration
base=(--clients 350 --publishers 10 --message-size 64 --duration "$d" --warmup 2)
run baseline        "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${base[@]}" --channels 10 --target-rate 3500
run fanout          "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${base[@]}" --channels 1 --target-rate 400
run saturation-base "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${base[@]}" --channels 10 --target-rate 0
run saturation-fan  "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${base[@]}" --channels 1 --target-rate 0
run connections     "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" --clients 10000 --publishers 10 --channels 100 \
                    --target-rate 100 --duration "$d" --warmup 2 --connect-parallel 256
all="0-$((ncpu - 1))"
run scaling-cores1      "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${base[@]}" --channels 10 --target-rate 0
run scaling-cores2      "$all" 2 1024 "$all" "${base[@]}" --channels 10 --target-rate 0
run scaling-cores2-ring16 "$all" 2 16 "$all" "${base[@]}" --channels 10 --target-rate 0

{
  echo "# Benchmark run $date_tag on $host"
  echo
  echo "Machine: $ncpu CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r)."
  echo "Command: \`scripts/bench.sh --duration $duration\` (commit $(git rev-parse --short HEAD))."
  echo "Nexus CPUs / --cores / --ring-size per row; the load generator (examples/stress, tokio on epoll) ran on CPU $LOAD_CPUS unless the row gives the nexus every CPU."
  echo "Nexus CPU is its CPU time over the whole stress run (connect, warm-up, window, drain), as a share of one core; load-gen CPU is over the measured window."
  echo "Nexus RSS is before the run and the peak during it; the per-connection figure divides the growth by the client count."
  echo
  echo "| scenario | load | nexus cpus/cores/ring | publish/s | deliveries/s | p50 ms | p99 ms | p99.9 ms | max ms | lost | reordered | load-gen CPU | nexus CPU | nexus RSS | result |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for r in "${rows[@]}"; do echo "| ${r} |"; done
  echo
  echo "Raw results: \`$out_dir/\` (.txt summary, .json, .hgrm percentile distribution per scenario)."
} > "$report"
echo; cat "$report"
