#!/usr/bin/env bash
# Runs every test of the repository the way CI does: prepare the machine, install exactly the
# locked dependencies, run `pnpm test` (turbo, one package at a time). Exits with the tests' status.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/test-env.sh
pnpm install --frozen-lockfile
# Turbo would otherwise try to reach its telemetry host, which CI machines cannot.
export TURBO_TELEMETRY_DISABLED=1
exec pnpm test
