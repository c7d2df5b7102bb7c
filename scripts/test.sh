#!/usr/bin/env bash
# The project's test command: installs what is missing, then runs every test.
# Usage: scripts/test.sh            (what CI runs)
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh || exit 1

echo "== build (tests and benchmarks) =="
cargo build --workspace --all-targets --locked || exit 1

echo "== tests =="
mkdir -p target
cargo test --workspace --locked 2>&1 | tee target/test-output.log
status=${PIPESTATUS[0]}

# One plain closing line over all test binaries.
awk '/^test result:/ {
       for (i = 1; i <= NF; i++) {
         if ($(i+1) ~ /^passed/) p += $i
         if ($(i+1) ~ /^failed/) f += $i
         if ($(i+1) ~ /^ignored/) s += $i
       }
     }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' target/test-output.log
exit "$status"
