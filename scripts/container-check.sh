#!/usr/bin/env bash
# The Dockerfile's steps as a plain script (no Docker engine needed): build
# the release binary the way the builder stage does, install it as the
# runtime stage does, start it as a non-root user without a terminal, check
# that it serves a WebSocket upgrade (ws, and wss with certificates laid out
# as a read-only volume mounts them) and stops cleanly on SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builder stage: the same cargo command, from the lock file.
cargo build --release --locked --bin ease_chat_nexus

# Runtime stage: a system user with uid 10001 and the binary alone.
root=$(mktemp -d)
trap 'rm -rf "$root"; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true' EXIT
install -m 0755 target/release/ease_chat_nexus "$root/ease_chat_nexus"
chmod 0755 "$root"
user=nexus
if ! id -u "$user" >/dev/null 2>&1; then
  useradd --system --no-create-home --uid 10001 "$user" 2>/dev/null || useradd --system --no-create-home "$user"
fi

port=${CHECK_PORT:-16599}
tls_port=$((port + 1))
log="$root/nexus.log"
# Certificates as a read-only volume would bring them (docker run -v
# /etc/easechat/tls:/tls:ro): owned by root, the key readable by the
# container user's group only.
mkdir -p "$root/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=localhost \
  -keyout "$root/tls/privkey.pem" -out "$root/tls/fullchain.pem" 2> /dev/null
chgrp "$(id -g "$user")" "$root/tls/privkey.pem"
chmod 0640 "$root/tls/privkey.pem"
chmod 0644 "$root/tls/fullchain.pem"
chmod 0755 "$root/tls"
# ENTRYPOINT + CMD (plus wss, as the Dockerfile documents), as the non-root
# user, standard input closed (no terminal).
setpriv --reuid="$user" --regid="$(id -g "$user")" --clear-groups \
  "$root/ease_chat_nexus" "127.0.0.1:$port" --tls-listen "127.0.0.1:$tls_port" \
  --tls-cert "$root/tls/fullchain.pem" --tls-key "$root/tls/privkey.pem" \
  < /dev/null > "$root/stdout" 2> "$log" &
pid=$!

for _ in $(seq 1 100); do
  grep -q "listening" "$log" 2>/dev/null && break
  sleep 0.05
done
grep -q "listening" "$log" || { echo "container-check: nexus did not start"; cat "$log"; exit 1; }
[ "$(ps -o user= -p "$pid" | tr -d ' ')" = "$user" ] || { echo "container-check: not running as $user"; exit 1; }

# EXPOSE 6500: a WebSocket upgrade is answered with 101.
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n' >&3
read -r -t 5 status <&3 || true
exec 3>&-
case "$status" in
  "HTTP/1.1 101"*) ;;
  *) echo "container-check: upgrade answered '$status'"; cat "$log"; exit 1 ;;
esac

# EXPOSE 6543: a wss upgrade through TLS is answered with 101 too.
status=$(printf 'GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n' \
  | timeout 5 openssl s_client -quiet -connect "127.0.0.1:$tls_port" -servername localhost \
      -CAfile "$root/tls/fullchain.pem" -verify_return_error 2> /dev/null | head -n 1 || true)
case "$status" in
  "HTTP/1.1 101"*) ;;
  *) echo "container-check: wss upgrade answered '$status'"; cat "$log"; exit 1 ;;
esac

# STOPSIGNAL SIGTERM: graceful stop, exit code 0.
kill -TERM "$pid"
code=0; wait "$pid" || code=$?
pid=""
[ "$code" -eq 0 ] || { echo "container-check: exit code $code after SIGTERM"; cat "$log"; exit 1; }
grep -q "stopped" "$log" || { echo "container-check: no 'stopped' line"; cat "$log"; exit 1; }
echo "container-check: ok (non-root user $user, no terminal, 101 on ws and wss upgrades, certificates from a read-only mount, exit 0 on SIGTERM)"
