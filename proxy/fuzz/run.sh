#!/bin/sh
# Fuzzes the frame decoder for 60 s (or the seconds given as $1) with cargo-fuzz on stable rustc
# (RUSTC_BOOTSTRAP=1 unlocks the nightly sanitizer flags). Needs `cargo install cargo-fuzz`.
# Uses its own target dir so it never contends with the workspace build.
set -eu
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$(pwd)/target}"
RUSTC_BOOTSTRAP=1 exec cargo fuzz run decode -- -max_total_time="${1:-60}"
