#!/usr/bin/env bash
# Installs what scripts/bench.sh needs beyond the Rust toolchain, with
# apt-get, if it is missing: the peers it compares the nexus with
# (redis-server, nats-server) and openssl (the tls family's test CA).
# Idempotent: a package already installed is left alone, and apt-get runs
# only when something is missing. Needs root (or sudo) on Debian/Ubuntu.
#
#   scripts/bench-setup.sh            # install what is missing
#   scripts/bench-setup.sh --check    # only say what is missing (exit 1 if anything)
#
# The peers' own system services are stopped and disabled if the packages
# start them (Debian's redis-server does): the bench starts its own
# instances, pinned to the server CPU, and an idle daemon on the machine
# would only add noise.
set -euo pipefail

check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  *) echo "unknown argument: $1" >&2; exit 2 ;;
esac

# binary -> Debian package
declare -A package=([redis-server]=redis-server [nats-server]=nats-server [openssl]=openssl)

have() { command -v "$1" > /dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

missing=()
for bin in redis-server nats-server openssl; do
  if have "$bin"; then
    echo "bench-setup: $bin present"
  else
    missing+=("${package[$bin]}")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "bench-setup: nothing to install"
  exit 0
fi
if [ "$check" = 1 ]; then
  echo "bench-setup: missing: ${missing[*]}"
  exit 1
fi

sudo=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo > /dev/null || { echo "bench-setup: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
command -v apt-get > /dev/null || { echo "bench-setup: no apt-get; install ${missing[*]} by hand" >&2; exit 1; }

echo "bench-setup: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"

# The packages' own daemons are not the bench's: stop them where a service
# manager runs them (containers and the like have none; nothing to do).
if command -v systemctl > /dev/null && [ -d /run/systemd/system ]; then
  for unit in redis-server nats-server; do
    if systemctl is-active --quiet "$unit" 2>/dev/null; then
      "${sudo[@]}" systemctl disable --now "$unit" || true
    fi
  done
fi

for bin in redis-server nats-server openssl; do
  have "$bin" || { echo "bench-setup: $bin still missing after apt-get" >&2; exit 1; }
done
echo "bench-setup: done"
