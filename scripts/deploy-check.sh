#!/usr/bin/env bash
# Checks deploy/ with the tools that consume it: `systemd-analyze verify` on
# the service unit (with ExecStart pointed at the binary built here, which
# verify requires to exist and be executable), and its `systemd-analyze
# security` exposure score for the README.
#
# The unit fails the check when verify exits non-zero or prints anything
# about it (its name or its file). To show that the check itself still
# bites on this machine's systemd, two broken copies of the unit (no
# ExecStart=, an ExecStart= that is not executable) must fail it too.
#
#   scripts/deploy-check.sh [BINARY [UNIT]]   (defaults: target/release/ease_chat_nexus,
#                                              deploy/easechat-nexus.service)
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${1:-target/release/ease_chat_nexus}
source_unit=${2:-deploy/easechat-nexus.service}
[ -x "$binary" ] || cargo build --release --bin ease_chat_nexus
command -v systemd-analyze >/dev/null || { echo "deploy-check: systemd-analyze missing (apt-get install systemd)"; exit 1; }
[ -f "$source_unit" ] || { echo "deploy-check: no unit file $source_unit"; exit 1; }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
name=easechat-nexus.service

# Known-benign lines of `systemd-analyze verify` (an extended regex), none
# today: with systemd 252 (Debian 12) the real unit makes verify print
# nothing and exit 0, outside a booted systemd too (network-online.target
# and multi-user.target resolve from the installed systemd package). Add a
# pattern here only with the systemd version and the reason it is harmless.
benign='^$'

# verify FILE: prints the problems verify reports about FILE (nothing when
# clean); returns 1 when there are any.
verify() {
  local file=$1 out rc=0
  out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$file" 2>&1) || rc=$?
  # Lines about this unit (by its name or its path: "easechat-nexus.service:
  # Command … is not executable", "FILE:18: Unknown key …"); lines about
  # other units are shown but do not fail the check.
  local ours others
  ours=$(grep -F -e "$name" -e "$file" <<< "$out" | grep -Ev "$benign" || true)
  others=$(grep -v -F -e "$name" -e "$file" <<< "$out" | grep -Ev "$benign" || true)
  [ -z "$others" ] || printf 'deploy-check: (about other units, not failing) %s\n' "$others" >&2
  if [ "$rc" -ne 0 ] || [ -n "$ours" ]; then
    echo "systemd-analyze verify exited $rc"
    [ -z "$ours" ] || echo "$ours"
    # A non-zero exit with nothing about this unit: show everything it said.
    [ -n "$ours" ] || [ -z "$out" ] || echo "$out"
    return 1
  fi
}

# The unit as shipped, with ExecStart= pointed at the binary built here.
real="$dir/real/$name"
mkdir -p "$dir/real"
sed "s|/usr/local/bin/ease_chat_nexus|$(realpath "$binary")|" "$source_unit" > "$real"
if ! problems=$(verify "$real"); then
  echo "deploy-check: systemd-analyze verify found problems in $source_unit:"; echo "$problems"; exit 1
fi
echo "deploy-check: systemd-analyze verify: ok"

# The check must catch what it is there for (each copy must fail it).
mkdir -p "$dir/no-exec-start" "$dir/not-executable"
# No ExecStart= (the line and its continuation lines).
awk '/^ExecStart=/ {skip = 1} skip && !/\\$/ {skip = 0; next} !skip' "$real" > "$dir/no-exec-start/$name"
# ExecStart= naming a file that exists but is not executable.
cp "$binary" "$dir/not-executable/ease_chat_nexus" && chmod a-x "$dir/not-executable/ease_chat_nexus"
sed "s|/usr/local/bin/ease_chat_nexus|$dir/not-executable/ease_chat_nexus|" "$source_unit" > "$dir/not-executable/$name"
for broken in no-exec-start not-executable; do
  if verify "$dir/$broken/$name" > /dev/null; then
    echo "deploy-check: a broken unit ($broken) passed systemd-analyze verify: this check no longer detects problems"
    exit 1
  fi
done
echo "deploy-check: broken units (no ExecStart=, ExecStart= not executable) are refused: ok"

if security=$(systemd-analyze security --offline=yes "$real" 2>/dev/null | tail -1); then
  echo "deploy-check: systemd-analyze security: $security"
fi
