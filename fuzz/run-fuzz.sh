#!/usr/bin/env bash
# Runs every fuzz target for a while on stable Rust (RUSTC_BOOTSTRAP lets
# cargo-fuzz use the sanitizer flags it needs).
#   fuzz/run-fuzz.sh [--minimize] [SECONDS_PER_TARGET]   (default 600)
# New inputs that reach new code are added to fuzz/corpus/<target>. The
# committed corpora are never rewritten unless you ask: --minimize runs
# `cargo fuzz cmin` afterwards, which deletes the inputs it finds redundant
# (review the deletions with `git status fuzz/corpus` before committing).
set -euo pipefail
script=$(realpath "$0")
cd "$(dirname "$script")"
minimize=false
seconds=600
for arg in "$@"; do
  case "$arg" in
    --minimize) minimize=true ;;
    -h|--help) sed -n '2,8p' "$script" | sed 's/^# \{0,1\}//'; exit 0 ;;
    ''|*[!0-9]*) echo "run-fuzz.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    *) seconds=$arg ;;
  esac
done
targets=(frames handshake codec)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in "${targets[@]}"; do
  echo "=== $target for ${seconds}s"
  cargo fuzz run -O "$target" "corpus/$target" -- -max_total_time="$seconds" -max_len=4096 2>&1 | tail -n 4
done
if $minimize; then
  for target in "${targets[@]}"; do
    echo "=== minimizing corpus/$target"
    cargo fuzz cmin -O "$target" "corpus/$target" >/dev/null 2>&1 || true
  done
fi
