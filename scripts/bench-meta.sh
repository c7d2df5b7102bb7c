#!/usr/bin/env bash
# Metadata-service benchmark (issue 4): TEEMS rr and cft (5 local replicas,
# M_R=2, F=2) and a 5-member etcd cluster on loopback, same puts and gets from
# 1, 8 and 64 concurrent clients.
#
# Usage: scripts/bench-meta.sh [SECONDS_PER_POINT]      (default 5)
# Needs: etcd (Debian package etcd-server); without it, etcd is skipped and
# the script says so. Results: target/bench-meta/results.md (+ .json).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-5}"
# BENCH_SKIP_BUILD=1 reuses the release binaries already in target/release.
[ "${BENCH_SKIP_BUILD:-0}" = 1 ] || cargo build --release -p enclave-replica -p teemsfs --bins
work="$(mktemp -d -t teems-bench-meta-XXXXXX)"
out_dir="target/bench-meta"
mkdir -p "$out_dir"

etcd_pids=()
cleanup() {
  for pid in "${etcd_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${etcd_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

etcd_arg=()
if command -v etcd >/dev/null 2>&1; then
  names=(); peers=(); clients=()
  for i in 1 2 3 4 5; do
    names+=("e$i"); peers+=("$(free_port)"); clients+=("$(free_port)")
  done
  initial=""
  for i in 0 1 2 3 4; do
    initial+="${names[$i]}=http://127.0.0.1:${peers[$i]},"
  done
  initial="${initial%,}"
  for i in 0 1 2 3 4; do
    etcd --name "${names[$i]}" --data-dir "$work/etcd-${names[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${peers[$i]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${peers[$i]}" \
      --listen-client-urls "http://127.0.0.1:${clients[$i]}" \
      --advertise-client-urls "http://127.0.0.1:${clients[$i]}" \
      --initial-cluster "$initial" --initial-cluster-state new \
      --initial-cluster-token teems-bench >"$work/etcd-${names[$i]}.log" 2>&1 &
    etcd_pids+=("$!")
  done
  endpoints=""
  for i in 0 1 2 3 4; do endpoints+="127.0.0.1:${clients[$i]},"; done
  endpoints="${endpoints%,}"
  # Wait (bounded) until the cluster has a leader and accepts a put.
  ready=0
  for _ in $(seq 1 100); do
    if curl -sf -X POST "http://127.0.0.1:${clients[0]}/v3/kv/put" -d '{"key":"cmVhZHk=","value":"MQ=="}' >/dev/null 2>&1; then
      ready=1; break
    fi
    sleep 0.2
  done
  if [ "$ready" = 1 ]; then
    echo "etcd $(etcd --version | head -1 | awk '{print $3}') cluster of 5 at $endpoints"
    etcd_arg=(--etcd "$endpoints")
  else
    echo "etcd did not become ready; skipping it (logs in $work)" >&2
  fi
else
  echo "etcd not installed (apt-get install etcd-server): measuring TEEMS only" >&2
fi

target/release/teemsfs bench meta "$work/clusters" --seconds "$seconds" \
  "${etcd_arg[@]}" --out "$out_dir/results.md"
echo "results: $out_dir/results.md"
