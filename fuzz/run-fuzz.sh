#!/usr/bin/env bash
# Runs every fuzz target for a while on stable Rust (RUSTC_BOOTSTRAP lets
# cargo-fuzz use the sanitizer flags it needs), then minimizes the corpora.
#   fuzz/run-fuzz.sh [SECONDS_PER_TARGET]   (default 600)
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in frames handshake codec; do
  echo "=== $target for ${seconds}s"
  cargo fuzz run -O "$target" "corpus/$target" -- -max_total_time="$seconds" -max_len=4096 2>&1 | tail -n 4
done
for target in frames handshake codec; do
  cargo fuzz cmin -O "$target" "corpus/$target" >/dev/null 2>&1 || true
done
