#!/usr/bin/env bash
# Issue 10, row 9: start the nexus with many shards, SIGTERM it a few seconds
# later, repeat; a run that has not exited within --hang seconds is a hang.
# For each hang the threads are captured (top -H, /proc/PID/task/*/stat and,
# for the first three hangs if gdb is installed, every thread's backtrace)
# before SIGKILL.
#
#   scripts/sigterm-cycles.sh                      # 100 cycles at --cores 16
#   scripts/sigterm-cycles.sh --cycles 20 --cores 8 --wait 3 --hang 15
#   scripts/sigterm-cycles.sh --out DIR            # where captures go
#
# Each cycle also notes whether every shard had logged "shard started" when
# SIGTERM was sent (on a loaded machine 16 shards can take longer than 3 s).
# Prints one `SIGTERM-CYCLES {json}` line at the end; exits 1 if any run hung
# or failed to start. Uses target/release/ease_chat_nexus (NEXUS to override;
# built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

cycles=100 cores=16 wait_s=3 hang_s=15 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cycles) cycles="$2"; shift 2 ;;
    --cores) cores="$2"; shift 2 ;;
    --wait) wait_s="$2"; shift 2 ;;
    --hang) hang_s="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
out=${out:-$(mktemp -d /tmp/sigterm-cycles.XXXXXX)}
mkdir -p "$out"
nexus=${NEXUS:-target/release/ease_chat_nexus}
[ -x "$nexus" ] || cargo build --release --bin ease_chat_nexus
ulimit -l unlimited 2>/dev/null || true

pid=""
cleanup() { if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; wait "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

hangs=0 start_failures=0 clean=0 slowest=0 not_ready=0 hangs_not_ready=0
for i in $(seq 1 "$cycles"); do
  log="$out/cycle-$i.log"
  "$nexus" 127.0.0.1:0 --cores "$cores" < /dev/null > /dev/null 2> "$log" &
  pid=$!
  sleep "$wait_s"
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
    start_failures=$((start_failures + 1)); pid=""
    echo "cycle $i: the nexus exited before SIGTERM (log: $log)"
    continue
  fi
  started_lines=$(grep -c "shard started" "$log" || true)
  ready=1; [ "$started_lines" -lt "$cores" ] && { ready=0; not_ready=$((not_ready + 1)); }
  kill -TERM "$pid"
  t0=$(date +%s%N) exited=0
  while [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt $((hang_s * 1000)) ]; do
    if ! kill -0 "$pid" 2>/dev/null; then exited=1; break; fi
    sleep 0.05
  done
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  if [ "$exited" = 1 ]; then
    wait "$pid" 2>/dev/null || true
    clean=$((clean + 1)); [ "$ms" -gt "$slowest" ] && slowest=$ms
    rm -f "$log"
  else
    hangs=$((hangs + 1)); [ "$ready" = 0 ] && hangs_not_ready=$((hangs_not_ready + 1))
    cap="$out/hang-$i.txt"
    {
      echo "# cycle $i: pid $pid still running ${hang_s} s after SIGTERM (shards started: $started_lines/$cores)"
      echo "## shard lines in the log"; grep -E "shard (started|stopping|stopped)" "$log" || true
      echo "## top -H"; top -H -b -n 1 -p "$pid" 2>&1 | head -40 || true
      echo "## /proc/$pid/task/*/stat"; for t in /proc/"$pid"/task/*; do cat "$t/comm" "$t/stat" 2>/dev/null | tr '\n' ' '; echo; done
      if [ "$hangs" -le 3 ] && command -v gdb > /dev/null; then
        echo "## gdb thread apply all bt"
        timeout 120 gdb -p "$pid" -batch -ex "thread apply all bt" 2>&1 | grep -v "^\[New LWP" | head -400 || true
      fi
    } > "$cap"
    kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
    echo "cycle $i: HANG (captured in $cap)"
  fi
  pid=""
  [ $((i % 10)) = 0 ] && echo "cycle $i/$cycles: $hangs hang(s), $start_failures start failure(s)"
done
echo "SIGTERM-CYCLES {\"cycles\":$cycles,\"cores\":$cores,\"wait_s\":$wait_s,\"hang_s\":$hang_s,\"hangs\":$hangs,\"hangs_with_shards_still_starting\":$hangs_not_ready,\"sigterm_before_all_shards_started\":$not_ready,\"start_failures\":$start_failures,\"clean\":$clean,\"slowest_stop_ms\":$slowest,\"captures\":\"$out\"}"
[ "$hangs" = 0 ] && [ "$start_failures" = 0 ]
