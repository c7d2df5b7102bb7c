#!/usr/bin/env bash
# Installs what the tests and the embedded default need on a fresh machine.
# Idempotent: everything already present is skipped. Runs as root (CI does).
set -euo pipefail

log() { printf 'setup: %s\n' "$*"; }

need_apt=()
command -v fusermount3 >/dev/null 2>&1 || need_apt+=(fuse3)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
# The AWS HTTP client loads the system roots even for http:// endpoints.
[ -s /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian package starts a system redis on 6379; tests start their own on
  # random ports, so the system one is left alone.
else
  log "apt packages present (fuse3, redis-server, redis-tools, ca-certificates)"
fi

# S3-compatible test server: moto's server (Python). Installed in the machine
# image usually; install from PyPI otherwise.
if ! command -v moto_server >/dev/null 2>&1; then
  log "pip install moto[server]"
  python3 -m pip install --quiet 'moto[server]'
  # pyenv shims need a rehash to expose the new entry point.
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
command -v moto_server >/dev/null 2>&1 || { echo "setup: moto_server still not on PATH" >&2; exit 1; }
log "moto_server present"

# POSIX conformance tools for tests/tests/posix_conformance.rs and scripts/pjdfstest.sh
# (crates.io binaries; a few minutes to build on first install).
for tool in pjdfstest fsx; do
  if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/$tool" ]; then
    log "cargo install $tool --locked"
    cargo install "$tool" --locked --quiet
  fi
done
log "pjdfstest and fsx present"

if [ ! -e /dev/fuse ]; then
  echo "setup: /dev/fuse is missing: FUSE mount tests cannot run on this machine" >&2
  exit 1
fi
log "done"
