#!/usr/bin/env bash
# EaseChat Nexus scale run (issue 23, "Many cores"): the nexus with 1, 2, 4,
# 8 … shards, each shard pinned to a core of its own (--cores S, taskset on
# the first S cores), the load generator (examples/stress, release build)
# on the cores left over, and the peers beside it when they are installed
# and examples/stress speaks their protocol: Redis (one thread, one core,
# whatever S is) and NATS (GOMAXPROCS=S on the same S cores the nexus had).
# Writes bench-results/<date>-scale-<host>.md and the raw files in
# bench-results/<date>-scale-<host>/ (runs.tsv, per run .json .hgrm .txt
# .cpu .threads .sys .metrics, costs.json). Stops everything it started.
#
#   scripts/bench-scale.sh                     # shards 1, 2, 4 … up to half the cores, 10 s windows
#   scripts/bench-scale.sh --max-shards 8      # up to 8 shards (1, 2, 4, 8)
#   scripts/bench-scale.sh --shards 1,2,4,6    # exactly these shard counts
#   scripts/bench-scale.sh --duration 30 --warmup 3
#   scripts/bench-scale.sh --families production,closed   # some families only (below)
#   scripts/bench-scale.sh --peers none        # the nexus only (default auto: every peer
#                                              # installed that examples/stress can speak to)
#   scripts/bench-scale.sh --repeats 3         # each (shards, family) 3 times, servers alternating
#   scripts/bench-scale.sh --cpus 0,2,4,6,8,10,12,14,1,3,5,7,9,11,13,15
#                                              # the CPU order to use (servers take the first ones)
#   scripts/bench-scale.sh --load-threads 6    # stress threads (default: one per load CPU)
#   scripts/bench-scale.sh --closed-in-flight 500   # frames in flight per client in the closed
#                                              # loops (default 2,000; fewer keep the socket buffers
#                                              # in cache: a memory-bandwidth check)
#
# Families (S = shards; clients scale with S where the point is weak scaling,
# so every shard holds about 350 subscribers as one shard does in production):
#   production    350·S clients, 10·S publishers, 1 channel, 400 msg/s
#   rate          350·S clients, 10·S publishers, 1 channel, --high-rate msg/s (default 8,000)
#   closed        350·S clients, 10·S publishers, 1 channel, closed loop, 2,000 frames in flight
#                 per client (--in-flight 700,000·S; stress's default of 32 per client measures
#                 latency, not capacity)
#   tenchan       350·S clients, 10·S publishers, 10 channels, 3,500 msg/s
#   closed-fixed  350 clients, 10 publishers, 1 channel, closed loop (2,000 frames in flight per
#                 client), whatever S is
#                 (strong scaling: fewer local subscribers per shard, more ring traffic per delivery)
#   costs         calibration for bench-results/scaling-model.md, at S = 1 and 2 only:
#                 cost-empty  (1 publisher at --cost-rate msg/s to 1,000 channels nobody else
#                              listens to: the price of reading and parsing a publish),
#                 cost-sparse (700 clients, 700 channels, 1 subscriber each, 1 publisher at
#                              --cost-rate: one delivery per publish; at S = 2 about half of
#                              them cross the ring, all from the publisher's shard; where 2
#                              shards and the load generator do not fit on cores of their own,
#                              both shards share one core, layout "stacked", so that the load
#                              generator keeps its own)
# Default: all of them.
#
# CPU layout. CPUs are taken in --cpus order (default: the affinity list,
# one hardware thread per physical core first, SMT siblings last). The
# servers run on the first S of them. The load generator runs on the CPUs
# left after the largest S of the run (and their SMT siblings), the same
# set for every S, so its capacity does not change with S. When no CPU is
# left (this 2-CPU VM with --max-shards 2), a run whose S leaves CPUs free
# puts the load there, and a run with S = all CPUs shares the servers' CPUs
# with the load generator: the report marks those runs "shared" and their
# numbers are functional only. Shard counts above the number of usable
# cores are skipped, and the report says so.
#
# Server CPU (cores) is read from /proc/PID/stat every 0.2 s and per thread
# from /proc/PID/task/*/schedstat (ns); cross-shard traffic from the
# nexus's /metrics (--admin 127.0.0.1:SCALE_PORT+1), scraped once a second
# and at the start and end of each run, interpolated to the load
# generator's measured window: easechat_ring_messages_total (messages one
# shard sent to others: publications, interest, admin questions),
# easechat_ring_full_total, easechat_deliveries_total,
# easechat_publishes_total, easechat_connections_open per shard. The
# sampling uses bash builtins only (no process per sample, see bench.sh),
# and the script itself runs on the load CPUs. The whole machine's busy
# time (/proc/stat) is sampled too: what is neither the server nor the load
# generator is other work on the host, reported per run.
#
# Environment: SCALE_PORT (default 16700: nexus ws; +1 admin, +2 redis,
# +3 nats), NEXUS_ARGS (more nexus flags), SCALE_OUT (output directory; the
# report goes beside it as <dir>.md), MODEL_COSTS (the JSON the report
# predicts from; default the "model-costs" block of
# bench-results/scaling-model.md).
set -euo pipefail
cd "$(dirname "$0")/.."

orig_args="$*"
duration=10
warmup=2
max_shards=""
shard_list=""
families="production,rate,closed,tenchan,closed-fixed,costs"
peers=auto
cpu_order=""
load_threads=""
high_rate=8000
cost_rate=40000
repeats=1
ring=1024
closed_in_flight=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --max-shards) max_shards="$2"; shift 2 ;;
    --shards) shard_list="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --families) families="$2"; shift 2 ;;
    --peers) peers="$2"; shift 2 ;;
    --cpus) cpu_order="$2"; shift 2 ;;
    --load-threads) load_threads="$2"; shift 2 ;;
    --high-rate) high_rate="$2"; shift 2 ;;
    --cost-rate) cost_rate="$2"; shift 2 ;; # calibration publishes/s (default 40,000)
    --repeats) repeats="$2"; shift 2 ;;
    --ring-size) ring="$2"; shift 2 ;;
    --closed-in-flight) closed_in_flight="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

# ---------------------------------------------------------------- CPUs
expand_list() { # "0-3,8,10-11" -> "0 1 2 3 8 10 11"
  local part a b out=()
  IFS=, read -r -a parts <<< "$1"
  for part in "${parts[@]}"; do
    if [[ "$part" == *-* ]]; then
      a=${part%-*}; b=${part#*-}
      for ((i = a; i <= b; i++)); do out+=("$i"); done
    elif [ -n "$part" ]; then
      out+=("$part")
    fi
  done
  echo "${out[@]}"
}
join_by() { local IFS="$1"; shift; echo "$*"; }
allowed=$(awk '/^Cpus_allowed_list/ { print $2 }' /proc/self/status)
read -r -a allowed_cpus <<< "$(expand_list "$allowed")"
core_of() { # CPU -> the first CPU of its physical core (itself without SMT)
  local f=/sys/devices/system/cpu/cpu$1/topology/core_cpus_list
  [ -r "$f" ] || f=/sys/devices/system/cpu/cpu$1/topology/thread_siblings_list
  if [ -r "$f" ]; then local l; l=$(expand_list "$(cat "$f")"); echo "${l%% *}"; else echo "$1"; fi
}
if [ -n "$cpu_order" ]; then
  read -r -a cpus <<< "$(expand_list "$cpu_order")"
else
  primaries=(); siblings=()
  for c in "${allowed_cpus[@]}"; do
    if [ "$(core_of "$c")" = "$c" ]; then primaries+=("$c"); else siblings+=("$c"); fi
  done
  cpus=("${primaries[@]}" "${siblings[@]}")
fi
# Physical cores among the CPUs (a shard per physical core).
declare -A seen_core=()
phys=()
for c in "${cpus[@]}"; do
  k=$(core_of "$c")
  if [ -z "${seen_core[$k]:-}" ]; then seen_core[$k]=1; phys+=("$c"); fi
done
ncores=${#phys[@]}
[ -n "$max_shards" ] || max_shards=$((ncores / 2 > 0 ? ncores / 2 : 1))

if [ -n "$shard_list" ]; then
  IFS=, read -r -a wanted_shards <<< "$shard_list"
else
  wanted_shards=()
  for ((s = 1; s <= max_shards; s *= 2)); do wanted_shards+=("$s"); done
  last=${wanted_shards[-1]}
  [ "$last" = "$max_shards" ] || wanted_shards+=("$max_shards")
fi
shard_counts=(); skipped=()
for s in "${wanted_shards[@]}"; do
  if [ "$s" -le "$ncores" ]; then shard_counts+=("$s"); else skipped+=("$s"); fi
done
[ ${#shard_counts[@]} -gt 0 ] || { echo "no shard count fits on $ncores cores" >&2; exit 2; }
top=${shard_counts[-1]}

server_cpus_for() { # S -> "c0,c1,…": one CPU on each of the first S physical cores
  join_by , "${phys[@]:0:$1}"
}
# The fixed load set: every CPU whose physical core is not one of the first
# `top` cores (their SMT siblings stay idle).
declare -A server_core=()
for c in "${phys[@]:0:$top}"; do server_core[$(core_of "$c")]=1; done
fixed_load=()
for c in "${cpus[@]}"; do [ -n "${server_core[$(core_of "$c")]:-}" ] || fixed_load+=("$c"); done
load_cpus_for() { # S -> "cpus layout": the load generator's CPUs and own|shared
  if [ ${#fixed_load[@]} -gt 0 ]; then
    echo "$(join_by , "${fixed_load[@]}") own"
  elif [ "$1" -lt "$ncores" ]; then
    local rest=() c
    declare -A mine=()
    for c in "${phys[@]:0:$1}"; do mine[$(core_of "$c")]=1; done
    for c in "${cpus[@]}"; do [ -n "${mine[$(core_of "$c")]:-}" ] || rest+=("$c"); done
    echo "$(join_by , "${rest[@]}") own"
  else
    echo "$(join_by , "${cpus[@]}") shared"
  fi
}

# ---------------------------------------------------------------- set-up
port=${SCALE_PORT:-16700}
admin_port=$((port + 1))
redis_port=$((port + 2))
nats_port=$((port + 3))
date_tag=$(date -u +%Y-%m-%d)
host=$(hostname -s 2>/dev/null || echo host)
out_dir=${SCALE_OUT:-"bench-results/${date_tag}-scale-${host}"}
report="${out_dir}.md"
mkdir -p "$out_dir"
runs="$out_dir/runs.tsv"
: > "$runs"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
ulimit -l unlimited 2>/dev/null || true

cargo build --release --bin ease_chat_nexus --example stress
# Other work rebuilds target/ while this runs: run private copies.
bin_dir=$(mktemp -d /tmp/bench-scale.XXXXXX)
cp target/release/ease_chat_nexus target/release/examples/stress "$bin_dir/"
nexus_bin=$bin_dir/ease_chat_nexus
stress_bin=$bin_dir/stress
clk_tck=$(getconf CLK_TCK)
commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+dirty')"

stress_help=$("$stress_bin" --help 2>&1 || true)
peer_list=()
want_peer() { [ "$peers" = auto ] || [[ ",$peers," == *",$1,"* ]]; }
peer_notes=()
if [ "$peers" != none ]; then
  if want_peer redis; then
    if ! command -v redis-server > /dev/null; then peer_notes+=("redis: redis-server not installed, skipped")
    elif ! grep -q 'redis://' <<< "$stress_help"; then peer_notes+=("redis: examples/stress does not speak redis:// (not in its --help), skipped")
    else peer_list+=(redis); fi
  fi
  if want_peer nats; then
    if ! command -v nats-server > /dev/null; then peer_notes+=("nats: nats-server not installed, skipped")
    elif ! grep -q 'nats://' <<< "$stress_help"; then peer_notes+=("nats: examples/stress does not speak nats:// (not in its --help), skipped")
    else peer_list+=(nats); fi
  fi
fi

{
  echo "commit $commit"
  echo "command ${orig_args:+scripts/bench-scale.sh $orig_args}"
  echo "started $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "host $host"
  echo "cpu_model $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "allowed_cpus $allowed"
  echo "cpu_order $(join_by , "${cpus[@]}")"
  echo "physical_cores $ncores"
  echo "numa $(lscpu 2>/dev/null | awk -F: '/NUMA node[0-9]+ CPU/ { gsub(/ +/, " "); printf "%s:%s; ", $1, $2 }')"
  echo "shards $(join_by , "${shard_counts[@]}")"
  echo "skipped_shards $(join_by , "${skipped[@]}")"
  echo "fixed_load $(join_by , "${fixed_load[@]}")"
  echo "peers $(join_by , "${peer_list[@]}")"
  for n in "${peer_notes[@]}"; do echo "peer_note $n"; done
  echo "duration $duration"
  echo "warmup $warmup"
  echo "high_rate $high_rate"
  echo "cost_rate $cost_rate"
  echo "ring_size $ring"
  echo "closed_in_flight $closed_in_flight"
  echo "nexus_args ${NEXUS_ARGS:-}"
  echo "load_before $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "clk_tck $clk_tck"
  echo "nexus_sha256 $(sha256sum "$nexus_bin" | cut -c1-16)"
  echo "stress_sha256 $(sha256sum "$stress_bin" | cut -c1-16)"
} > "$out_dir/host.txt"

# The script's own sampling runs where the load generator runs.
read -r first_load_cpus _ <<< "$(load_cpus_for "${shard_counts[0]}")"
taskset -cp "$first_load_cpus" $$ > /dev/null 2>&1 || true

server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$bin_dir"
}
trap cleanup EXIT

exec {pause_fd}<> <(:) # never readable: `read -t` on it is a builtin sleep
pause() { read -r -t "$1" -u "$pause_fd" _ || true; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
cpu_sample() { # PID -> "unix-seconds utime+stime-ticks"
  local stat fields
  read -r stat < "/proc/$1/stat" || return 0
  read -r -a fields <<< "${stat##*) }"
  echo "${EPOCHREALTIME/,/.} $((fields[11] + fields[12]))"
}
sys_sample() { # -> "unix-seconds busy-ticks steal-ticks" of the whole machine (/proc/stat)
  local cpu user nice system idle iowait irq softirq steal _
  read -r cpu user nice system idle iowait irq softirq steal _ < /proc/stat
  echo "${EPOCHREALTIME/,/.} $((user + nice + system + irq + softirq)) $steal"
}
threads_sample() { # PID -> "unix-seconds tid:comm:run-ns …"
  local line="${EPOCHREALTIME/,/.}" t comm rt _
  for t in /proc/"$1"/task/*; do
    { read -r comm < "$t/comm" && read -r rt _ < "$t/schedstat"; } 2>/dev/null || continue
    line+=" ${t##*/}:${comm// /_}:$rt"
  done
  echo "$line"
}
scrape() { # OUT: one /metrics scrape, the lines the report uses, between "T start end" and "E"
  local fd line t0=${EPOCHREALTIME/,/.} body=()
  { exec {fd}<>"/dev/tcp/127.0.0.1/$admin_port"; } 2>/dev/null || return 0
  printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&"$fd"
  while IFS= read -r -t 3 line <&"$fd"; do
    case "$line" in
      easechat_ring_*|easechat_deliveries_total*|easechat_publishes_total*|easechat_connections_open*|easechat_pauses_total*|easechat_shards*)
        body+=("${line%$'\r'}") ;;
    esac
  done
  exec {fd}<&-
  { echo "T $t0 ${EPOCHREALTIME/,/.}"; printf '%s\n' "${body[@]}"; echo E; } >> "$1"
}

start_server() { # kind S server-cpus log
  local kind=$1 s=$2 scpus=$3 log=$4 p
  case "$kind" in
    nexus) p=$port ;;
    redis) p=$redis_port ;;
    nats) p=$nats_port ;;
  esac
  if port_open "$p" || { [ "$kind" = nexus ] && port_open "$admin_port"; }; then
    echo "port $p (or $admin_port) is already in use: set SCALE_PORT" >&2; exit 1
  fi
  case "$kind" in
    # shellcheck disable=SC2086 # NEXUS_ARGS is a list of flags
    nexus) taskset -c "$scpus" "$nexus_bin" "127.0.0.1:$port" --cores "$s" --ring-size "$ring" --log warn \
             --admin "127.0.0.1:$admin_port" ${NEXUS_ARGS:-} < /dev/null > /dev/null 2>> "$log" & ;;
    # One thread, one core, like one shard; no persistence.
    redis) taskset -c "${scpus%%,*}" redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
             --protected-mode no --io-threads 1 --maxclients 60000 --logfile "" < /dev/null > /dev/null 2>> "$log" & ;;
    # All the S cores the nexus had.
    nats) GOMAXPROCS=$s taskset -c "$scpus" nats-server -a 127.0.0.1 -p "$nats_port" \
             < /dev/null > /dev/null 2>> "$log" & ;;
  esac
  server_pid=$!
  for _ in $(seq 1 200); do
    if port_open "$p" && { [ "$kind" != nexus ] || port_open "$admin_port"; }; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "$kind did not start:" >&2; cat "$log" >&2; exit 1
}
stop_server() { kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=""; }

family_args() { # family S -> stress arguments
  local f=$1 s=$2 c=$((350 * $2)) p=$((10 * $2))
  local common=(--message-size 64 --duration "$duration" --warmup "$warmup")
  case "$f" in
    production) echo "--clients $c --publishers $p --channels 1 --target-rate 400 ${common[*]}" ;;
    rate) echo "--clients $c --publishers $p --channels 1 --target-rate $high_rate ${common[*]}" ;;
    # About 2,000 frames in flight per client at every S: deep enough to keep
    # a shard busy (the default 32 per client measures latency, not capacity),
    # shallow enough (~200 KiB) to stay clear of the 1 MiB outbox bound when
    # the load generator falls behind (issue 14's 10,000 per client closed
    # slow consumers once the load generator shared the servers' cores).
    closed) echo "--clients $c --publishers $p --channels 1 --target-rate 0 --in-flight $((closed_in_flight * c)) ${common[*]}" ;;
    tenchan) echo "--clients $c --publishers $p --channels 10 --target-rate 3500 ${common[*]}" ;;
    closed-fixed) echo "--clients 350 --publishers 10 --channels 1 --target-rate 0 --in-flight $((closed_in_flight * 350)) ${common[*]}" ;;
    cost-empty) echo "--clients 1 --publishers 1 --channels 1000 --target-rate $cost_rate ${common[*]}" ;;
    cost-sparse) echo "--clients 700 --publishers 1 --channels 700 --target-rate $cost_rate ${common[*]}" ;;
    *) echo "unknown family $f" >&2; exit 2 ;;
  esac
}
url_for() { # kind
  case "$1" in
    nexus) echo "ws://127.0.0.1:$port" ;;
    redis) echo "redis://127.0.0.1:$redis_port" ;;
    nats) echo "nats://127.0.0.1:$nats_port" ;;
  esac
}

# run FAMILY S KIND REPEAT
run() {
  local family=$1 s=$2 kind=$3 r=$4
  local scpus lcpus layout threads tag status=0
  scpus=$(server_cpus_for "$s")
  read -r lcpus layout <<< "$(load_cpus_for "$s")"
  threads=${load_threads:-$(awk -F, '{ print NF }' <<< "$lcpus")}
  if [[ "$family" == cost-* ]] && [ "$layout" = shared ] && [ "$ncores" -ge 2 ]; then
    # Calibration needs the load generator off the servers' cores: the S
    # shards share the cores but one (the nexus pins shard i to core i mod n).
    scpus=$(server_cpus_for $((ncores - 1)))
    read -r lcpus _ <<< "$(load_cpus_for $((ncores - 1)))"
    layout=stacked
  fi
  tag="S$s.$family.$kind.r$r"
  local sargs; sargs=$(family_args "$family" "$s")
  echo; echo "=== $tag: server CPUs $scpus, load on $lcpus ($layout, $threads threads): $sargs"
  local log="$out_dir/$tag.log"
  : > "$log"
  start_server "$kind" "$s" "$scpus" "$log"
  local cpu_file="$out_dir/$tag.cpu" thr_file="$out_dir/$tag.threads" met_file="$out_dir/$tag.metrics"
  local sys_file="$out_dir/$tag.sys"
  : > "$cpu_file"; : > "$thr_file"; : > "$met_file"; : > "$sys_file"
  [ "$kind" = nexus ] && scrape "$met_file"
  # shellcheck disable=SC2086 # sargs is a list of flags
  taskset -c "$lcpus" "$stress_bin" --url "$(url_for "$kind")" --threads "$threads" $sargs \
    --json "$out_dir/$tag.json" --hgrm "$out_dir/$tag.hgrm" --name-prefix "scale-$tag" \
    > "$out_dir/$tag.txt" 2>&1 &
  local stress_pid=$! tick=0
  while kill -0 "$stress_pid" 2>/dev/null; do
    cpu_sample "$server_pid" >> "$cpu_file"
    threads_sample "$server_pid" >> "$thr_file"
    sys_sample >> "$sys_file"
    if [ "$kind" = nexus ] && [ $((tick % 5)) = 0 ]; then scrape "$met_file"; fi
    tick=$((tick + 1))
    pause 0.2
  done
  cpu_sample "$server_pid" >> "$cpu_file"
  threads_sample "$server_pid" >> "$thr_file"
  sys_sample >> "$sys_file"
  [ "$kind" = nexus ] && scrape "$met_file"
  wait "$stress_pid" || status=$?
  stop_server
  tail -n 6 "$out_dir/$tag.txt"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$family" "$s" "$kind" "$r" "$tag" "$scpus" "$lcpus" \
    "$layout" "$threads" "$status" "$sargs" >> "$runs"
}

IFS=, read -r -a fam_list <<< "$families"
expanded=()
for f in "${fam_list[@]}"; do
  if [ "$f" = costs ]; then expanded+=(cost-empty cost-sparse); else expanded+=("$f"); fi
done
for s in "${shard_counts[@]}"; do
  for f in "${expanded[@]}"; do
    for ((r = 1; r <= repeats; r++)); do
      if [[ "$f" == cost-* ]]; then
        [ "$s" -le 2 ] || continue
        [ "$f" = cost-empty ] && [ "$s" != 1 ] && continue
        run "$f" "$s" nexus "$r"
        continue
      fi
      for kind in nexus "${peer_list[@]}"; do
        run "$f" "$s" "$kind" "$r"
      done
    done
  done
done
echo "load_after $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out_dir/host.txt"
echo "finished $(date -u '+%Y-%m-%d %H:%M:%S UTC')" >> "$out_dir/host.txt"

python3 scripts/bench_scale_report.py --dir "$out_dir" --report "$report" \
  ${MODEL_COSTS:+--model-costs "$MODEL_COSTS"}
echo; cat "$report"
