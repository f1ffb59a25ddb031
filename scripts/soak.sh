#!/usr/bin/env bash
# Soak test: a nexus under churn, resets, half-open sockets, expiring and
# renewed subscriptions, continuous publishing and slow consumers, for a
# bounded time. Samples the nexus's RSS and open file descriptors every 10 s
# and fails if either grows past its warm-up level by more than the margin,
# or if any steady subscriber lost or reordered a message.
#
#   scripts/soak.sh                  # 10 minutes
#   scripts/soak.sh --duration 1800  # 30 minutes; writes bench-results/
#
# Margins: after the warm-up (the first 20% of the run, at least 60 s), RSS
# may exceed the warm-up maximum by at most 20% (+4 MiB for allocator
# noise), open files by at most 10% (+16).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=600
record=""
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --record) record="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
warmup=$(( duration / 5 )); [ "$warmup" -lt 60 ] && warmup=60
[ "$warmup" -ge "$duration" ] && warmup=$(( duration / 2 ))
port=${SOAK_PORT:-16600}
ulimit -n 65536 2>/dev/null || true
ulimit -l unlimited 2>/dev/null || true

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
cargo build --release --bin ease_chat_nexus --example soak
log=$(mktemp)
nexus_pid=""; soak_pid=""
cleanup() {
  [ -n "$soak_pid" ] && kill "$soak_pid" 2>/dev/null || true
  [ -n "$nexus_pid" ] && kill -TERM "$nexus_pid" 2>/dev/null && wait "$nexus_pid" 2>/dev/null || true
}
trap cleanup EXIT

# Short keepalive so half-open sockets are reaped within the run; a small
# outbox so slow consumers are found within seconds.
target/release/ease_chat_nexus "127.0.0.1:$port" --cores 2 --keepalive 5 --keepalive-timeout 5 \
  --max-outbox-bytes 262144 --log warn < /dev/null > /dev/null 2> "$log" &
nexus_pid=$!
sleep 0.5
kill -0 "$nexus_pid" || { cat "$log"; exit 1; }

target/release/examples/soak --addr "127.0.0.1:$port" --duration "$duration" > "$log.soak" 2>&1 &
soak_pid=$!

samples=()
warm_rss=0; warm_fds=0; fail=""
start=$(date +%s)
while kill -0 "$soak_pid" 2>/dev/null; do
  sleep 10
  kill -0 "$nexus_pid" 2>/dev/null || { fail="nexus died"; break; }
  t=$(( $(date +%s) - start ))
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$nexus_pid/status")
  fds=$(ls "/proc/$nexus_pid/fd" | wc -l)
  samples+=("$t $rss $fds")
  if [ "$t" -le "$warmup" ]; then
    [ "$rss" -gt "$warm_rss" ] && warm_rss=$rss
    [ "$fds" -gt "$warm_fds" ] && warm_fds=$fds
    echo "t=${t}s rss=${rss}KiB fds=${fds} (warm-up)"
  else
    rss_limit=$(( warm_rss * 12 / 10 + 4096 ))
    fds_limit=$(( warm_fds * 11 / 10 + 16 ))
    echo "t=${t}s rss=${rss}KiB (limit ${rss_limit}) fds=${fds} (limit ${fds_limit})"
    [ "$rss" -gt "$rss_limit" ] && fail="RSS ${rss} KiB passed ${rss_limit} KiB at ${t}s"
    [ "$fds" -gt "$fds_limit" ] && fail="open files ${fds} passed ${fds_limit} at ${t}s"
  fi
done
soak_status=0; wait "$soak_pid" || soak_status=$?; soak_pid=""
cat "$log.soak"
[ "$soak_status" -ne 0 ] && fail="${fail:+$fail; }steady subscribers lost or reordered messages (soak exit $soak_status)"
grep -E "panicked|ERROR" "$log" && fail="${fail:+$fail; }errors in the nexus log"

verdict=${fail:-ok}
echo "soak: $verdict"
if [ -n "$record" ]; then
  {
    echo "# Soak run $(date -u +%Y-%m-%d) on $(hostname -s 2>/dev/null || echo host)"
    echo
    echo "Command: \`scripts/soak.sh --duration $duration --record $record\` (commit $commit); $(nproc) CPUs, kernel $(uname -r)."
    echo "Nexus: \`--cores 2 --keepalive 5 --keepalive-timeout 5 --max-outbox-bytes 262144\`. Warm-up: first ${warmup} s."
    echo
    echo "Result: **$verdict**"
    echo
    echo '```'
    cat "$log.soak"
    echo '```'
    echo
    echo "| t (s) | nexus RSS (KiB) | open files |"
    echo "|---|---|---|"
    for s in "${samples[@]}"; do set -- $s; echo "| $1 | $2 | $3 |"; done
  } > "$record"
  echo "recorded in $record"
fi
[ -z "$fail" ]
