#!/usr/bin/env bash
# The one command a newcomer runs: checks Node.js and pnpm, installs the dependencies, then starts
# every Postroom service with `postroom up` (which finds or starts NATS and PostgreSQL itself).
#   scripts/up.sh [--only svc,svc] [--data-dir DIR]      (config: $POSTROOM_CONFIG or the example)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1; then
  echo "up.sh: Node.js is not installed; install Node.js 20 (20.11 or newer) and run this again." >&2
  exit 1
fi
# package.json says "node": ">=20.11"; --import with tsx needs at least that.
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 11) ? 0 : 1)'; then
  echo "up.sh: Node.js $(node --version) is too old; install Node.js 20.11 or newer and run this again." >&2
  exit 1
fi

if ! command -v pnpm >/dev/null 2>&1; then
  echo "up.sh: pnpm not found; installing it with: npm i -g pnpm@12.4.2"
  npm i -g pnpm@12.4.2
fi

pnpm install --frozen-lockfile
exec pnpm postroom up --config "${POSTROOM_CONFIG:-examples/postroom.example.yaml}" "$@"
