#!/usr/bin/env bash
# Where a shard's time goes per publish at a paced rate (issue 23): runs the
# nexus (--cores 1, CPU 0) and examples/stress (CPU 1) at the production scale
# (350 clients, 1 channel, 10 publishers, 64-byte texts), records the shard's
# system calls and scheduling on CPU 0 for a second with perf, and prints,
# per wake-up that fanned a publish out (an io_uring_enter of more than
# 300 µs), the median and p90 of: wake-up -> the fan-out's submission, the
# submission itself, the rest of the run until the shard sleeps; and the
# system calls per such run with their time.
#
#   scripts/wakeup-trace.sh                 # 400 msg/s
#   scripts/wakeup-trace.sh --rate 2000 --out /tmp/trace
#
# Needs perf (linux-perf) and root (or perf_event_paranoid <= 1). Run it on a
# quiet machine; nothing is written outside --out (default a temp directory).
set -euo pipefail
cd "$(dirname "$0")/.."

rate=400 out="" port=${BENCH_PORT:-46700}
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
command -v perf > /dev/null || { echo "perf is not installed (apt install linux-perf)" >&2; exit 2; }
[ -n "$out" ] || out=$(mktemp -d)
mkdir -p "$out"
cargo build --release --bin ease_chat_nexus --example stress

taskset -c 0 target/release/ease_chat_nexus "127.0.0.1:$port" --cores 1 --log warn \
  < /dev/null > /dev/null 2> "$out/nexus.log" &
nexus=$!
trap 'kill "$nexus" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
taskset -c 1 target/release/examples/stress --url "ws://127.0.0.1:$port" --clients 350 --publishers 10 \
  --message-size 64 --channels 1 --duration 6 --warmup 2 --target-rate "$rate" > "$out/stress.txt" 2>&1 &
stress=$!
sleep 4
taskset -c 1 perf record --clockid=monotonic -C 0 -o "$out/perf.data" \
  -e raw_syscalls:sys_enter,raw_syscalls:sys_exit,sched:sched_switch -- sleep 1 2> "$out/perf.log"
wait "$stress"
perf script -i "$out/perf.data" -F comm,tid,time,event,trace > "$out/perf.txt" 2>/dev/null
grep -E "latency" "$out/stress.txt" || true
python3 - "$out/perf.txt" "$rate" <<'PY'
import collections, re, statistics, sys
NAMES = {45: "recvfrom", 44: "sendto", 426: "io_uring_enter", 324: "membarrier", 202: "futex"}
lines = open(sys.argv[1]).read().splitlines()
pattern = re.compile(r"\s*(\S+)\s+(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)")
calls = collections.Counter(m.group(2) for m in map(pattern.match, lines)
                            if m and m.group(1).startswith("shard") and m.group(4).endswith("sys_enter"))
if not calls:
    sys.exit("no shard system calls recorded")
tid = calls.most_common(1)[0][0]
runs, run = [], None
for line in lines:
    m = pattern.match(line)
    if not m:
        continue
    _, task, ts, event, rest = m.groups()
    ts = float(ts)
    if event == "sched:sched_switch":
        if f"next_pid={tid}" in rest:
            run = {"start": ts, "calls": []}
        elif f"prev_pid={tid}" in rest and run:
            run["end"] = ts
            runs.append(run)
            run = None
    elif task == tid and run is not None:
        if event.endswith("sys_enter"):
            nr = int(re.search(r"NR (\d+)", rest).group(1))
            run["calls"].append([NAMES.get(nr, f"nr{nr}"), ts, None])
        elif event.endswith("sys_exit") and run["calls"] and run["calls"][-1][2] is None:
            run["calls"][-1][2] = ts
def fan_out(run):
    return next((c for c in run["calls"] if c[0] == "io_uring_enter" and c[2] and c[2] - c[1] > 300e-6), None)
fans = [(r, fan_out(r)) for r in runs if fan_out(r)]
if not fans:
    sys.exit("no fan-out submission seen")
print(f"rate {sys.argv[2]} msg/s: {len(runs)} shard runs in 1 s, {len(fans)} with a fan-out submission")
parts = {"wake-up -> fan-out submission": [], "the submission (sends)": [], "after it, until asleep": []}
count, spent = collections.Counter(), collections.Counter()
for r, f in fans:
    parts["wake-up -> fan-out submission"].append(f[1] - r["start"])
    parts["the submission (sends)"].append(f[2] - f[1])
    parts["after it, until asleep"].append(r["end"] - f[2])
    for name, a, b in r["calls"]:
        count[name] += 1
        spent[name] += (b or a) - a
for label, xs in parts.items():
    xs.sort()
    print(f"  {label:32s} median {statistics.median(xs) * 1e6:8.1f} us   p90 {xs[int(len(xs) * 0.9)] * 1e6:8.1f} us")
print("  system calls per fan-out run: " + ", ".join(
    f"{name} {count[name] / len(fans):.2f} ({spent[name] / len(fans) * 1e6:.1f} us)" for name in count))
PY
echo "raw: $out"
