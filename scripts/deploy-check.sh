#!/usr/bin/env bash
# Checks deploy/ with the tools that consume it: `systemd-analyze verify` on
# the service unit (with ExecStart pointed at the binary built here, which
# verify requires to exist), and its `systemd-analyze security` exposure
# score for the README.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${1:-target/release/ease_chat_nexus}
[ -x "$binary" ] || cargo build --release --bin ease_chat_nexus
command -v systemd-analyze >/dev/null || { echo "deploy-check: systemd-analyze missing (apt-get install systemd)"; exit 1; }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
unit="$dir/easechat-nexus.service"
sed "s|/usr/local/bin/ease_chat_nexus|$(realpath "$binary")|" deploy/easechat-nexus.service > "$unit"
out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$unit" 2>&1 || true)
# verify cannot resolve dependencies outside a booted systemd (no D-Bus,
# no other units here): keep only what it says about this unit's own lines.
problems=$(grep -F "$unit" <<< "$out" | grep -v "Failed to .*dependency\|unit files .* not found" || true)
if [ -n "$problems" ]; then
  echo "deploy-check: systemd-analyze verify found problems:"; echo "$problems"; exit 1
fi
echo "deploy-check: systemd-analyze verify: ok"
if security=$(systemd-analyze security --offline=yes "$unit" 2>/dev/null | tail -1); then
  echo "deploy-check: systemd-analyze security: $security"
fi
