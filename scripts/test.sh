#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine with Rust installed.
# Installs what the tests use beyond Rust (GDAL's ogrinfo, to check that other GIS
# tools read our GeoPackage), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust first (https://rustup.rs)" >&2
  exit 1
fi
if ! command -v ogrinfo >/dev/null; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends gdal-bin >/dev/null
fi
cargo test --all-targets "$@"
