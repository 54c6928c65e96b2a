#!/usr/bin/env bash
# Type-checks grafana/dashboards/*.json against Grafana's published dashboard
# schema (@grafana/schema, pinned in package.json / package-lock.json):
#   src/import-check.ts    the JSON imported as a module, against `Dashboard`;
#   generated/<name>.ts    the JSON as a typed literal (gen-dashboard-ts.mjs),
#                          against src/schema.ts: enum values, unknown keys,
#                          each panel's options for its plugin, queries.
# Installs the pinned packages with `npm ci` unless node_modules already holds
# them (so it runs offline once installed). Usage: grafana/check/check.sh
set -euo pipefail
cd "$(dirname "$0")"

command -v node >/dev/null && command -v npm >/dev/null || {
  echo "check.sh: node and npm are required (Debian: apt-get install nodejs npm)" >&2
  exit 1
}

# `npm ls` checks node_modules against package.json without the network; the
# versions there are exact, so a passing tree is the locked one.
if [ -d node_modules ] && npm ls --all >/dev/null 2>&1; then
  echo "node_modules up to date: skipping npm ci"
else
  npm ci --prefer-offline --no-audit --no-fund
fi

node gen-dashboard-ts.mjs
# Errors in generated/<name>.ts are at the same line of dashboards/<name>.json.
if ! out=$(npx --no-install tsc --noEmit -p . 2>&1); then
  printf '%s\n' "$out" | sed -E 's#^generated/([^(]+)\.ts\(([0-9]+),([0-9]+)\)#grafana/dashboards/\1.json:\2:\3#'
  echo "FAIL: dashboard schema check (tsc $(npx --no-install tsc --version))" >&2
  exit 1
fi
echo "OK: dashboards type-check against @grafana/schema $(node -p 'require("./node_modules/@grafana/schema/package.json").version') ($(npx --no-install tsc --version))"
