#!/usr/bin/env bash
# The embedded default: a local TEEMS cluster, local stores and a mount under DIR.
# Usage: scripts/up.sh DIR          start (idempotent set-up, release build, `teemsfs up DIR`)
#        scripts/up.sh --down DIR   unmount and stop everything under DIR
set -euo pipefail
cd "$(dirname "$0")/.."

down=0
if [ "${1:-}" = "--down" ]; then down=1; shift; fi
dir=${1:?usage: scripts/up.sh [--down] DIR}
bin="${CARGO_TARGET_DIR:-target}/release"

if [ "$down" = 1 ]; then
  exec "$bin/teemsfs" down "$dir"
fi

bash scripts/setup.sh
cargo build --release --locked -p teemsfs -p enclave-replica --bins
exec "$bin/teemsfs" up "$dir"
