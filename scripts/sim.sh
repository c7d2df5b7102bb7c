#!/usr/bin/env bash
# Run the deterministic simulator (docs/TESTING.md, "The simulator").
#
#   scripts/sim.sh --mode rr|cft --seeds N [--mr M --f F] [--start SEED]
#
# Exits 0 when no seed finds a violation, 1 (printing the seed, the violation
# and the command that replays it) when one does. Built with the release
# profile: thousands of seeds are CPU-bound.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --release -p teemsfs-tests --bin sim -- "$@"
