#!/usr/bin/env bash
# EaseChat Nexus benchmark, side by side in one run: this machine's physical
# floor (examples/floor), the classic Tokio design the nexus replaces
# (examples/baseline), the nexus, and the peers a user would compare it
# with, Redis pub/sub and NATS, under the same loads. Writes
# bench-results/<date>-<host>.md (tables and ratios), the raw .json / .hgrm /
# .cpu files in bench-results/<date>-<host>/ and SVG latency plots there.
# Stops everything it started. scripts/bench-setup.sh installs what it
# needs (redis-server, nats-server, openssl) with apt-get.
#
#   scripts/bench.sh                    # everything, 10 s windows (~30 min with both peers)
#   scripts/bench.sh --duration 30      # longer windows
#   scripts/bench.sh --quick            # 3 s windows, 400 and 4,000 msg/s only, no scaling runs
#   scripts/bench.sh --only sweep       # one scenario family (repeatable): floor, sweep,
#                                       # production, auth, tls, history, retention, recovery, closed, tenchan,
#                                       # saturation, connections, scaling
#   scripts/bench.sh --repeats 9        # rounds at the production scale (default 5)
#   scripts/bench.sh --servers nexus,redis  # which servers: nexus, baseline, redis, nats (default: nexus,
#                                       # baseline and each peer installed: redis-server, nats-server in
#                                       # PATH or /usr/sbin)
#
# The peers run like one shard of the nexus, pinned to NEXUS_CPUS:
#   taskset -c $NEXUS_CPUS redis-server --port P --bind 127.0.0.1 --save '' --appendonly no --io-threads 1
#     --protected-mode no --maxclients 20000        (+ REDIS_ARGS)
#   GOMAXPROCS=1 taskset -c $NEXUS_CPUS nats-server -a 127.0.0.1 -p P   (+ NATS_ARGS)
# and examples/stress speaks their protocols (redis://, nats://) with the
# same stamped texts, every publish reaching the same receivers as on the
# nexus (bench-results/peers.md says how). They run every family the nexus
# and the baseline run except auth, tls and scaling (nexus features);
# at the production scale each round is the floor, then the nexus, Redis
# and NATS, in reverse order every other round.
#
# The server (one nexus shard, the baseline's one Tokio worker, a peer) runs on
# NEXUS_CPUS (default 0), the load generator on LOAD_CPUS (default the last
# CPU); the floor's sender is pinned like the server and its reader like the
# load. BENCH_PORT (default 16500) is the servers' port, BENCH_OUT the output
# directory (the report goes beside it as <dir>.md); NEXUS_ARGS,
# BASELINE_ARGS, REDIS_ARGS and NATS_ARGS add flags to the servers (e.g.
# --plain-sends, --coalesce-max-us 0; --feed-queued). Server CPU is read from
# /proc/PID/stat (utime + stime) every 0.2 s and taken over the load
# generator's measured window. BENCH_TLS_PORT (default BENCH_PORT + 1) is
# the nexus's wss port in the tls family, BENCH_TLS_KEY (ec, the default:
# ECDSA P-256; or rsa: RSA 2048) the kind of its test certificate's key.
#
# The production scale (400 msg/s) is compared with the floor (and the
# peers) in --repeats alternating rounds (floor, nexus, redis, nats, floor,
# nats, redis, nexus, ...): on a shared VM the floor's own p99 moves by half
# from one minute to the next, so one pair decides nothing; the report gives
# every pair and judges the median ratio.
# The same holds for the access-control family (auth): --auth off against
# --auth required with a policy of permissions, --repeats alternating pairs,
# and for wss (tls): one nexus with its wss listener on (a test CA and
# server certificate made with openssl in the output directory), loaded
# over ws then over wss at 400 and at 4,000 msg/s, --repeats alternating
# pairs, each repeat ending with a handshake storm (2,000 wss connections
# opened at once while 50 ws clients publish 200 msg/s) and, as its control,
# the same storm over ws.
#
# Issue 24, history and recovery (three families):
#   history    the production scale (350 clients, 1 channel, 10 publishers,
#              64-byte texts, 400 msg/s, one shard) against the nexus
#              without history, with --history '*' (every channel numbered and
#              kept; the subscribers are v1 clients: the cost of numbering and
#              keeping on the hot path), and with --history '*' while every
#              client asks for positions (examples/stress --positions: 1h with
#              the option "positions", positional 1r frames, which the sampled
#              receivers parse and check for gaps), in --repeats rounds (off,
#              on, positions; reversed every other round). Judged on the
#              median ratio (on ÷ off, positions ÷ off) of p99 and CPU,
#              target <= 1.1x.
#   retention  memory per retained message: examples/recovery_storm retain
#              publishes RETAIN_MESSAGES (default 200,000; 50,000 with
#              --quick) 64-byte texts over 10 channels into a nexus that keeps
#              them all (--history '*' with size, bytes and total bytes far
#              above that), reading the nexus's VmRSS and
#              easechat_history_bytes (/metrics on --admin) before and after:
#              RSS growth and the metric per retained message.
#   recovery   a reconnect storm per gap of 0, 10 and 300 messages
#              (RECOVERY_GAPS): STORM_CLIENTS (default 300) positions clients
#              on one history channel while a publisher publishes 400 msg/s;
#              all drop their connections at once, exactly GAP more messages
#              are published, all reconnect at once subscribing from their
#              last position while publishing goes on; --repeats cycles per
#              nexus (a fresh one per gap). Time from the reconnect until
#              every client has its whole replay and is live, the nexus's CPU
#              over that window, its RSS (sampled every 2 ms) and VmHWM; every
#              offset every client gets is checked (0 gaps, 0 duplicates).
#   scripts/bench.sh --only history --only retention --only recovery   # issue 24 alone
#   scripts/bench.sh --only history --duration 2 --repeats 1           # a functional check
# BENCH_ADMIN_PORT (default BENCH_PORT + 2) is the nexus's admin port in the
# retention and recovery families. Results: history-*.nexus.{json,txt,cpu,hgrm},
# retain.{json,txt}, recovery-gap<G>.{json,txt} in the output directory.
set -euo pipefail
cd "$(dirname "$0")/.."

orig_args="$*"
duration=10
quick=0
repeats=5
only=()
# A peer's binary: in PATH, or in /usr/sbin (Debian's nats-server), or none.
peer_bin() {
  local path
  if path=$(command -v "$1" 2>/dev/null); then echo "$path"
  elif [ -x "/usr/sbin/$1" ]; then echo "/usr/sbin/$1"
  fi
}
redis_bin=$(peer_bin redis-server)
nats_bin=$(peer_bin nats-server)
servers=(nexus baseline)
[ -n "$redis_bin" ] && servers+=(redis)
[ -n "$nats_bin" ] && servers+=(nats)
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --quick) quick=1; duration=3; repeats=2; shift ;;
    --only) only+=("$2"); shift 2 ;;
    --servers) IFS=, read -r -a servers <<< "$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
for kind in "${servers[@]}"; do
  case "$kind" in
    nexus|baseline) ;;
    redis) [ -n "$redis_bin" ] || { echo "--servers redis: no redis-server (scripts/bench-setup.sh installs it)" >&2; exit 2; } ;;
    nats) [ -n "$nats_bin" ] || { echo "--servers nats: no nats-server (scripts/bench-setup.sh installs it)" >&2; exit 2; } ;;
    *) echo "unknown server: $kind (nexus, baseline, redis, nats)" >&2; exit 2 ;;
  esac
done

ncpu=$(nproc)
NEXUS_CPUS=${NEXUS_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-$((ncpu - 1))}
port=${BENCH_PORT:-16500}
date_tag=$(date -u +%Y-%m-%d)
host=$(hostname -s 2>/dev/null || echo host)
out_dir=${BENCH_OUT:-"bench-results/${date_tag}-${host}"}
report="${out_dir}.md"
mkdir -p "$out_dir"
runs="$out_dir/runs.tsv"
: > "$runs"
# The peers' versions and command lines, for the report.
peers_file="$out_dir/peers.tsv"
: > "$peers_file"

if [ "$quick" = 1 ]; then rates=(400 4000); else rates=(400 1000 2000 4000 8000); fi
warmup=2

# The connections scenario holds 10,000 sockets open on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
ulimit -l unlimited 2>/dev/null || true

cargo build --release --bin ease_chat_nexus --example stress --example floor --example baseline --example plot \
  --example recovery_storm
cargo build --release -p easechat --bin easechat
nexus_bin=target/release/ease_chat_nexus
baseline_bin=target/release/examples/baseline
stress_bin=target/release/examples/stress
floor_bin=target/release/examples/floor
plot_bin=target/release/examples/plot
recovery_bin=target/release/examples/recovery_storm
easechat_bin=target/release/easechat
clk_tck=$(getconf CLK_TCK)

server_pid=""
cleanup() { if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

wanted() { # family
  [ ${#only[@]} -eq 0 ] && return 0
  [[ " ${only[*]} " =~ " $1 " ]]
}
has_server() { [[ " ${servers[*]} " =~ " $1 " ]]; }

# The sampling below runs beside the measured server, on its CPUs: it uses
# only bash builtins, because a process per sample (awk, date, sleep: ~15
# processes a second, each started on the server's or the load's CPU)
# showed up as +0.3-1.3 ms at the nexus's p99 at 400 msg/s, a cost the
# floor (which times itself) never paid.
rss_kib_into() { # VAR PID: sets VAR to PID's VmRSS in KiB (0 if none)
  local key value _
  printf -v "$1" 0
  while read -r key value _; do
    if [ "$key" = "VmRSS:" ]; then printf -v "$1" '%s' "$value"; return; fi
  done < "/proc/$2/status"
}
cpu_sample() { # PID -> "unix-seconds utime+stime-ticks"
  local stat fields
  read -r stat < "/proc/$1/stat" || return 0
  read -r -a fields <<< "${stat##*) }" # after "(comm) ": field 3 (state) first
  echo "${EPOCHREALTIME/,/.} $((fields[11] + fields[12]))"
}
exec {pause_fd}<> <(:) # never readable: `read -t` on it is a builtin sleep
pause() { read -r -t "$1" -u "$pause_fd" _ || true; }

start_server() { # kind cpus cores ring
  local kind=$1 cpus=$2 cores=$3 ring=$4 log="$out_dir/$1.log"
  case "$kind" in
    # shellcheck disable=SC2086 # REDIS_ARGS is a list of flags
    redis) taskset -c "$cpus" "$redis_bin" "${redis_flags[@]}" ${REDIS_ARGS:-} < /dev/null >> "$log" 2>&1 & ;;
    # shellcheck disable=SC2086 # NATS_ARGS is a list of flags
    nats) GOMAXPROCS=1 taskset -c "$cpus" "$nats_bin" "${nats_flags[@]}" ${NATS_ARGS:-} < /dev/null >> "$log" 2>&1 & ;;
    # NEXUS_ARGS is a list of flags, split on white space but not globbed
    # (--history '*').
    nexus) local nexus_args=()
           read -r -a nexus_args <<< "${NEXUS_ARGS:-}"
           taskset -c "$cpus" "$nexus_bin" "127.0.0.1:$port" --cores "$cores" --ring-size "$ring" --log warn \
             "${nexus_args[@]}" < /dev/null > /dev/null 2>> "$log" & ;;
    # shellcheck disable=SC2086 # BASELINE_ARGS is a list of flags
    baseline) taskset -c "$cpus" "$baseline_bin" "127.0.0.1:$port" --threads "$cores" ${BASELINE_ARGS:-} \
             < /dev/null > /dev/null 2>> "$log" & ;;
  esac
  server_pid=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "$kind did not start:" >&2; cat "$log" >&2; exit 1
}

stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""; }

# The peers, each like one shard: one I/O thread (Redis is single-threaded
# apart from background jobs; NATS gets one P), no persistence, loopback
# only. --maxclients: the connections family opens 10,000 subscribing
# connections plus Redis's 10 publishing ones (its default is 10,000).
redis_flags=(--port "$port" --bind 127.0.0.1 --save '' --appendonly no --io-threads 1 --protected-mode no
             --maxclients 20000)
nats_flags=(-a 127.0.0.1 -p "$port")
if has_server redis; then
  printf 'redis\t%s\ttaskset -c %s %s %s%s\n' "$("$redis_bin" --version)" "$NEXUS_CPUS" "$redis_bin" \
    "$(printf '%q ' "${redis_flags[@]}")" "${REDIS_ARGS:-}" >> "$peers_file"
fi
if has_server nats; then
  printf 'nats\t%s\tGOMAXPROCS=1 taskset -c %s %s %s%s\n' "$("$nats_bin" --version)" "$NEXUS_CPUS" "$nats_bin" \
    "$(printf '%q ' "${nats_flags[@]}")" "${NATS_ARGS:-}" >> "$peers_file"
fi

# run FAMILY NAME SERVER CPUS CORES RING LOAD_CPUS STRESS_ARGS...
# The load generator connects to URL_SCHEME://127.0.0.1:URL_PORT URL_PATH
# (default ws, BENCH_PORT, none; redis:// and nats:// for the peers), with
# STRESS_ARGS before the run's own.
run() {
  local family=$1 name=$2 kind=$3 scpus=$4 cores=$5 ring=$6 lcpus=$7; shift 7
  wanted "$family" && has_server "$kind" || return 0
  local scheme=${URL_SCHEME:-ws}
  case "$kind" in redis|nats) scheme=$kind ;; esac
  local tag="$name.$kind"
  echo; echo "=== $name on $kind (CPU $scpus, cores $cores, ring $ring), load on CPU $lcpus: $*"
  start_server "$kind" "$scpus" "$cores" "$ring"
  local rss_before; rss_kib_into rss_before "$server_pid"
  local rss_peak=$rss_before status=0 cpu_file="$out_dir/$tag.cpu"
  : > "$cpu_file"
  # shellcheck disable=SC2086 # STRESS_ARGS is a list of flags
  taskset -c "$lcpus" "$stress_bin" --url "$scheme://127.0.0.1:${URL_PORT:-$port}${URL_PATH:-}" \
    ${STRESS_ARGS:-} "$@" \
    --json "$out_dir/$tag.json" --hgrm "$out_dir/$tag.hgrm" --name-prefix "$name" \
    > "$out_dir/$tag.txt" 2>&1 &
  local stress_pid=$!
  while kill -0 "$stress_pid" 2>/dev/null; do
    cpu_sample "$server_pid" >> "$cpu_file"
    local r; rss_kib_into r "$server_pid"; [ "$r" -gt "$rss_peak" ] && rss_peak=$r
    pause 0.2
  done
  cpu_sample "$server_pid" >> "$cpu_file"
  wait "$stress_pid" || status=$?
  stop_server
  cat "$out_dir/$tag.txt"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$family" "$name" "$kind" "$scpus/$cores/$ring" \
    "$rss_before" "$rss_peak" "$status" "$*" >> "$runs"
}

# floor FAMILY MODE RATE [TAG_SUFFIX]
floor() {
  wanted "$1" || return 0
  local mode=$2 rate=$3 tag="floor-$3${4:-}.$2"
  echo; echo "=== floor: $mode, $rate publishes/s (0 = closed loop), sender on CPU $NEXUS_CPUS, reader on CPU $LOAD_CPUS"
  "$floor_bin" --mode "$mode" --rate "$rate" --duration "$duration" --warmup 1 \
    --sender-cpu "$NEXUS_CPUS" --reader-cpu "$LOAD_CPUS" \
    --json "$out_dir/$tag.json" --hgrm "$out_dir/$tag.hgrm" --fanout-hgrm "$out_dir/$tag.fanout.hgrm" \
    | tee "$out_dir/$tag.txt"
}

for rate in "${rates[@]}" 0; do
  floor floor send "$rate"
  floor floor uring "$rate"
done

d=$duration
fan=(--clients 350 --publishers 10 --message-size 64 --duration "$d" --warmup "$warmup" --channels 1)
ten=(--clients 350 --publishers 10 --message-size 64 --duration "$d" --warmup "$warmup" --channels 10)
# The production scale in rounds: the floor, then the nexus and the peers
# (in reverse order every other round, so that none always runs first).
if has_server nexus || has_server redis || has_server nats; then
  for i in $(seq 1 "$repeats"); do
    floor production uring 400 "-r$i"
    order=(nexus redis nats)
    [ $((i % 2)) = 0 ] && order=(nats redis nexus)
    for kind in "${order[@]}"; do
      run production "production-r$i" "$kind" "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${fan[@]}" --target-rate 400
    done
  done
fi
# Issue 20: access control at the production scale. Every client presents a
# token (one fleet token: names auth-required-rN-*, identity "bench"), and
# every 1h, 1c and 1t is checked against the token's and the policy's
# patterns (allow and deny lists), against the same load with --auth off.
if has_server nexus && wanted auth; then
  auth_dir="$out_dir/auth"
  mkdir -p "$auth_dir"
  head -c 48 /dev/urandom | base64 > "$auth_dir/hmac.key"
  cat > "$auth_dir/policy.toml" <<'POLICY'
[identity."bench"]
names = ["auth-*"]
publish = { allow = ["bench/*", "game/*"], deny = ["ops/*", "game/admin/*"] }
subscribe = { allow = ["bench/*", "game/*", "ops/broadcast"], deny = ["ops/secret/*"] }
max_connections = 1000
max_subscriptions = 10000
POLICY
  auth_token=$("$easechat_bin" token --key-file "$auth_dir/hmac.key" --name 'auth-*' --identity bench \
    --publish 'bench/*' --publish 'game/*' --deny-publish 'ops/*' --subscribe '*' --deny-subscribe 'ops/secret/*' --expires 86400)
  auth_flags="--auth required --auth-key-file $auth_dir/hmac.key --auth-policy $auth_dir/policy.toml"
  for i in $(seq 1 "$repeats"); do
    run auth "auth-off-r$i" nexus "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${fan[@]}" --target-rate 400
    NEXUS_ARGS="${NEXUS_ARGS:-} $auth_flags" URL_PATH="/?token=$auth_token" \
      run auth "auth-required-r$i" nexus "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${fan[@]}" --target-rate 400
  done
fi
# wss beside ws: the nexus with its wss listener on, loaded over ws and over
# wss in alternating pairs (same flags, same load); then a handshake storm.
make_test_pki() { # DIR: a test CA and a server certificate for localhost and 127.0.0.1 signed by it
  local dir=$1 newkey
  case "${BENCH_TLS_KEY:-ec}" in
    ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256); echo "ECDSA P-256" > "$dir/key-kind" ;;
    rsa) newkey=(-newkey rsa:2048); echo "RSA 2048" > "$dir/key-kind" ;;
    *) echo "BENCH_TLS_KEY must be ec or rsa" >&2; exit 2 ;;
  esac
  openssl req -x509 "${newkey[@]}" -nodes -days 7 -subj "/CN=EaseChat bench CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>> "$dir/openssl.log"
  openssl req "${newkey[@]}" -nodes -subj "/CN=localhost" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>> "$dir/openssl.log"
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "extendedKeyUsage=serverAuth" \
    "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" > "$dir/server.ext"
  openssl x509 -req -days 7 -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -extfile "$dir/server.ext" -out "$dir/server.pem" 2>> "$dir/openssl.log"
}
if has_server nexus && wanted tls; then
  tls_dir="$out_dir/tls"
  mkdir -p "$tls_dir"
  make_test_pki "$tls_dir"
  tls_port=${BENCH_TLS_PORT:-$((port + 1))}
  tls_flags="--tls-listen 127.0.0.1:$tls_port --tls-cert $tls_dir/server.pem --tls-key $tls_dir/server.key"
  # The storm's bystanders: 50 ws clients on one channel, 5 of them
  # publishing 200 msg/s in all; 2,000 connections opened at once 1 s into
  # the window: wss, then (the control: what accepting and upgrading that
  # many costs without TLS) ws.
  storm=(--clients 50 --publishers 5 --channels 1 --message-size 64 --target-rate 200 --duration "$d"
         --warmup "$warmup" --connect-storm 2000 --storm-at 1)
  for i in $(seq 1 "$repeats"); do
    for rate in 400 4000; do
      NEXUS_ARGS="${NEXUS_ARGS:-} $tls_flags" \
        run tls "tls-ws-$rate-r$i" nexus "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${fan[@]}" --target-rate "$rate"
      NEXUS_ARGS="${NEXUS_ARGS:-} $tls_flags" URL_SCHEME=wss URL_PORT="$tls_port" STRESS_ARGS="--ca $tls_dir/ca.pem" \
        run tls "tls-wss-$rate-r$i" nexus "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${fan[@]}" --target-rate "$rate"
    done
    NEXUS_ARGS="${NEXUS_ARGS:-} $tls_flags" STRESS_ARGS="--ca $tls_dir/ca.pem" \
      run tls "tls-storm-r$i" nexus "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${storm[@]}" \
      --storm-url "wss://127.0.0.1:$tls_port"
    NEXUS_ARGS="${NEXUS_ARGS:-} $tls_flags" \
      run tls "tls-storm-ws-r$i" nexus "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${storm[@]}" \
      --storm-url "ws://127.0.0.1:$port"
  done
fi
# Issue 24: history at the production scale, off / on (v1 subscribers) /
# on with positions clients, in rounds (reversed every other round).
history_flags="--history *"
if has_server nexus && wanted history; then
  for i in $(seq 1 "$repeats"); do
    order=(off on positions)
    [ $((i % 2)) = 0 ] && order=(positions on off)
    for variant in "${order[@]}"; do
      case "$variant" in
        off) run history "history-off-r$i" nexus "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${fan[@]}" --target-rate 400 ;;
        on) NEXUS_ARGS="${NEXUS_ARGS:-} $history_flags" \
              run history "history-on-r$i" nexus "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${fan[@]}" --target-rate 400 ;;
        positions) NEXUS_ARGS="${NEXUS_ARGS:-} $history_flags" \
              run history "history-positions-r$i" nexus "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${fan[@]}" \
                --target-rate 400 --positions ;;
      esac
    done
  done
fi
# Issue 24: memory per retained message and the reconnect storm, each
# against a nexus of its own (one shard on NEXUS_CPUS, the admin console on
# for /metrics), examples/recovery_storm on LOAD_CPUS. It times itself
# (bounded: --timeout per phase) and reads the nexus's CPU and memory from
# /proc/PID; `timeout` bounds the whole run besides.
admin_port=${BENCH_ADMIN_PORT:-$((port + 2))}
history_tool() { # FAMILY NAME NEXUS_FLAGS -- TOOL_ARGS...
  local family=$1 name=$2 flags=$3 status=0; shift 4
  echo; echo "=== $name (nexus on CPU $NEXUS_CPUS with $flags, load on CPU $LOAD_CPUS): recovery_storm $*"
  NEXUS_ARGS="${NEXUS_ARGS:-} --admin 127.0.0.1:$admin_port $flags" start_server nexus "$NEXUS_CPUS" 1 1024
  timeout 900 taskset -c "$LOAD_CPUS" "$recovery_bin" "$@" --url "ws://127.0.0.1:$port" \
    --admin "127.0.0.1:$admin_port" --server-pid "$server_pid" --json "$out_dir/$name.json" \
    > "$out_dir/$name.txt" 2>&1 || status=$?
  stop_server
  cat "$out_dir/$name.txt"
  printf '%s\t%s\t%s\t%s\t%s\n' "$family" "$name" "$status" "$flags" "$*" >> "$out_dir/history-tools.tsv"
}
: > "$out_dir/history-tools.tsv"
if has_server nexus && wanted retention; then
  retain_messages=${RETAIN_MESSAGES:-$([ "$quick" = 1 ] && echo 50000 || echo 200000)}
  # Bounds far above what is published: every message stays.
  retain_flags="--history * --history-size $((retain_messages * 2)) --history-bytes 4000000000"
  retain_flags+=" --history-total-bytes 8000000000 --history-ttl 86400"
  history_tool retention retain "$retain_flags" -- \
    retain --messages "$retain_messages" --channels 10 --message-size 64
fi
if has_server nexus && wanted recovery; then
  read -r -a recovery_gaps <<< "${RECOVERY_GAPS:-0 10 300}"
  for gap in "${recovery_gaps[@]}"; do
    history_tool recovery "recovery-gap$gap" "--history *" -- \
      storm --clients "${STORM_CLIENTS:-300}" --channels 1 --gap "$gap" --rate 400 --cycles "$repeats" \
      --message-size 64 --name-prefix "recovery-gap$gap"
  done
fi
# Every scenario runs on each server in turn (the nexus and Redis next to
# each other), so that the machine drifts as little as possible between them.
kinds=(nexus redis nats baseline)
for rate in "${rates[@]}"; do
  for kind in "${kinds[@]}"; do
    run sweep "sweep-$rate" "$kind" "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${fan[@]}" --target-rate "$rate"
  done
done
for kind in "${kinds[@]}"; do
  run closed closed-loop "$kind" "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${fan[@]}" --target-rate 0
done
# Issue 14's own closed loop: 1,000 publishes in flight per publisher
# (10 × 1,000 × 349 deliveries), against the baseline that feeds every
# queued frame before one flush, as the issue's Tokio nexus must have done
# to reach 4.1 M deliveries/s.
for kind in "${kinds[@]}"; do
  BASELINE_ARGS=--feed-queued run closed closed-loop-deep "$kind" "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" \
    "${fan[@]}" --target-rate 0 --in-flight $((1000 * 10 * 349))
done
for kind in "${kinds[@]}"; do
  run tenchan ten-channels "$kind" "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${ten[@]}" --target-rate 3500
done
for kind in "${kinds[@]}"; do
  run saturation saturation-ten-channels "$kind" "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" "${ten[@]}" --target-rate 0
done
for kind in "${kinds[@]}"; do
  run connections connections "$kind" "$NEXUS_CPUS" 1 1024 "$LOAD_CPUS" --clients 10000 --publishers 10 \
    --channels 100 --target-rate 100 --duration "$d" --warmup "$warmup" --connect-parallel 256
done
if [ "$quick" = 0 ]; then
  all="0-$((ncpu - 1))"
  run scaling scaling-cores2 nexus "$all" 2 1024 "$all" "${ten[@]}" --target-rate 0
  run scaling scaling-cores2-ring16 nexus "$all" 2 16 "$all" "${ten[@]}" --target-rate 0
fi

python3 scripts/bench_report.py --dir "$out_dir" --report "$report" --plot "$plot_bin" \
  --clk-tck "$clk_tck" --command "${NEXUS_ARGS:+NEXUS_ARGS='$NEXUS_ARGS' }${BASELINE_ARGS:+BASELINE_ARGS='$BASELINE_ARGS' }${REDIS_ARGS:+REDIS_ARGS='$REDIS_ARGS' }${NATS_ARGS:+NATS_ARGS='$NATS_ARGS' }scripts/bench.sh${orig_args:+ $orig_args}" \
  --commit "$(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')" \
  --nexus-cpus "$NEXUS_CPUS" --load-cpus "$LOAD_CPUS" --rates "${rates[*]}"
echo; cat "$report"
