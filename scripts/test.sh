#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine with Rust and Node.js installed.
# Installs what the build and the tests use beyond Rust: PROJ (the proj crate links the
# system library, found by pkg-config, and generates its bindings with libclang), PROJ's
# cs2cs and projinfo (the CRS tests' oracle), GDAL's ogrinfo and ogr2ogr (other GIS tools
# must read our GeoPackage, and GDAL's OAPIF and OGCAPI drivers our OGC API), OWSLib for
# Debian's python3 (the Python client of OGC API – Features), Debian's Chromium and
# playwright-core from npm (the browser test of the map page), xmllint (CAP 1.2 messages
# are validated against the OASIS schema). Then runs every Rust test
# and the browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust first (https://rustup.rs)" >&2
  exit 1
fi
need=()
for p in libproj-dev libgdal-dev libsqlite3-dev pkg-config libclang-dev clang python3-owslib; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
command -v cs2cs >/dev/null || need+=(proj-bin)
command -v ogrinfo >/dev/null || need+=(gdal-bin)
command -v curl >/dev/null || need+=(curl)
command -v xmllint >/dev/null || need+=(libxml2-utils)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cargo test "$@"
# The browser test drives the debug binary the tests just built.
(cd web && npm ci --no-audit --no-fund --loglevel=error)
cargo build --quiet
node tests/browser/map.test.mjs
