#!/usr/bin/env bash
# Installs the Debian packages raygate needs (redis-server; wrk for `make bench`) when they are missing.
# As root with apt-get it installs them; otherwise it says how to get them and fails.
set -euo pipefail
missing=()
for pkg in "$@"; do
  bin="$pkg"; [ "$pkg" = "redis-server" ] && bin=redis-server
  command -v "$bin" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi
echo "error: missing ${missing[*]}. Install with: sudo apt-get install ${missing[*]} (Debian/Ubuntu)," >&2
echo "       or 'brew install redis wrk' (macOS). With REDIS_URL set, raygate uses that Redis instead." >&2
exit 1
