#!/usr/bin/env bash
# Installs promtool (for `promtool check metrics` in the tests) from Debian's prometheus package without
# installing the package itself, which would start a Prometheus service. As root with apt-get only.
set -euo pipefail
command -v promtool >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "promtool not found (the metrics-format test will skip); on Debian: apt-get download prometheus" >&2
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
apt-get update -qq >/dev/null
(cd "$work" && apt-get download -qq prometheus >/dev/null 2>&1) || { echo "could not download prometheus" >&2; exit 0; }
dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb | tar -xO ./usr/bin/promtool > /usr/local/bin/promtool
chmod +x /usr/local/bin/promtool
