#!/usr/bin/env bash
# POSIX conformance of a real teemsfs mount (DESIGN §13, docs/SEMANTICS.md §6):
# the full pjdfstest suite, then fsx for FSX_OPS operations (default 100,000).
#
# Usage: scripts/pjdfstest.sh [PJDFSTEST_PATTERN...]
#   FSX_OPS=N     fsx operations (0 skips fsx)       default 100000
#   FSX_SEED=N    fsx seed                            default 1
#   CHUNK_BYTES=N chunk size of the deployment        default teemsfs's (4 MiB); a small
#                 one (e.g. 65536) makes fsx's 256 KiB file many chunks, so its far
#                 reads are ranged reads (docs/FORMAT.md F6)
#   BLOB_CACHE_BYTES=N  the mount's blob cache (0: off, so reads of committed chunks
#                 go to the stores)                   default teemsfs's (256 MiB)
#   KEEP=1        leave the deployment up afterwards
#
# Brings up a fresh deployment (`teemsfs up`) in a temporary directory with
# `allow_other` (pjdfstest switches to other users), runs the suites inside the
# mount, prints pjdfstest's own summary and a plain `N passed, N failed` line,
# and tears the deployment down. Exit status: non-zero if any pjdfstest case
# outside the documented limits failed, or fsx found a mismatch.
set -uo pipefail
cd "$(dirname "$0")/.."

FSX_OPS=${FSX_OPS:-100000}
FSX_SEED=${FSX_SEED:-1}

for tool in pjdfstest fsx; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "== installing $tool (cargo install --locked) =="
    cargo install "$tool" --locked || exit 1
  fi
done

cargo build --bins --locked || exit 1
TEEMSFS=target/debug/teemsfs

work=$(mktemp -d -t teemsfs-posix.XXXXXX)
# mktemp makes it 0700; pjdfstest's unprivileged users must be able to walk to the mount.
chmod 0755 "$work"
deploy="$work/deploy"
cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    "$TEEMSFS" down "$deploy" >/dev/null 2>&1 || true
    rm -rf "$work"
  else
    echo "kept: $deploy (stop with: $TEEMSFS down $deploy)"
  fi
}
trap cleanup EXIT

{
  [ -n "${CHUNK_BYTES:-}" ] && echo "chunk_size_bytes = $CHUNK_BYTES"
  [ -n "${BLOB_CACHE_BYTES:-}" ] && printf '[cache]\nblob_cache_bytes = %s\n' "$BLOB_CACHE_BYTES"
  printf '[mount]\nallow_other = true\n'
} > "$work/teemsfs.toml"
# pjdfstest: Linux has no chflags or NFSv4 ACLs; two unprivileged users it can switch to.
cat > "$work/pjdfstest.toml" <<'EOF'
[features]
posix_fallocate = {}
utime_now = {}
utimensat = {}

[settings]
naptime = 0.01

[dummy_auth]
entries = [["nobody", "nogroup"], ["daemon", "daemon"]]
EOF

"$TEEMSFS" up "$deploy" --config "$work/teemsfs.toml" || exit 1
mnt="$deploy/mnt"

echo "== pjdfstest =="
mkdir -p "$mnt/pjdfstest"
chmod 0777 "$mnt/pjdfstest"
(cd "$mnt/pjdfstest" && pjdfstest -c "$work/pjdfstest.toml" -p "$mnt/pjdfstest" "$@") > "$work/pjdfstest.log" 2>&1
pjd_status=$?
grep -E 'FAILED' "$work/pjdfstest.log" || true
summary=$(grep -E '^Summary:' "$work/pjdfstest.log" | tail -1)
if [ -z "$summary" ]; then
  echo "pjdfstest printed no summary; last lines:"
  tail -30 "$work/pjdfstest.log"
  exit 1
fi
echo "$summary"
passed=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$summary")
failed=$(sed -E 's/^Summary: ([0-9]+) failed.*/\1/' <<<"$summary")
echo "$passed passed, $failed failed"

fsx_status=0
if [ "$FSX_OPS" -gt 0 ]; then
  echo "== fsx: $FSX_OPS operations, seed $FSX_SEED =="
  mkdir -p "$mnt/fsx"
  (cd "$mnt/fsx" && fsx -N "$FSX_OPS" -S "$FSX_SEED" -P "$work" testfile) > "$work/fsx.log" 2>&1
  fsx_status=$?
  tail -3 "$work/fsx.log"
  if [ "$fsx_status" -eq 0 ] && grep -q 'All operations completed A-OK' "$work/fsx.log"; then
    echo "fsx: $FSX_OPS operations, 0 mismatches"
  else
    echo "fsx: FAILED (status $fsx_status); see the log above"
    fsx_status=1
  fi
fi

[ "$pjd_status" -eq 0 ] && [ "$fsx_status" -eq 0 ]
