#!/usr/bin/env bash
# Refreshes the map page's MapLibre GL JS from npm (web/package.json, package-lock.json)
# into web/vendor/, which is committed so that the server builds and runs offline
# (the files are embedded in the binary). Run after changing the version.
set -euo pipefail
cd "$(dirname "$0")/../web"
npm ci --no-audit --no-fund
src=node_modules/maplibre-gl
dst=vendor/maplibre-gl
mkdir -p "$dst"
cp "$src/dist/maplibre-gl.mjs" "$src/dist/maplibre-gl-worker.mjs" "$src/dist/maplibre-gl.css" "$dst/"
cp "$src/LICENSE.txt" "$dst/LICENSE.txt"
node -e 'console.log(require("./node_modules/maplibre-gl/package.json").version)' > "$dst/VERSION"
# Source maps are not shipped: drop the references so browsers do not ask for them.
sed -i 's|^//# sourceMappingURL=.*$||' "$dst/maplibre-gl.mjs" "$dst/maplibre-gl-worker.mjs"
echo "vendored maplibre-gl $(cat "$dst/VERSION")"
