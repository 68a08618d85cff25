#!/usr/bin/env bash
# Runs every check of the repository the way CI does: prepare the machine, install exactly the
# locked dependencies, lint and typecheck every package (tests and benchmarks included), run every
# package's tests, then the end-to-end suite. Exits non-zero when any check or test failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/test-env.sh
pnpm install --frozen-lockfile
# The chart tests run the real Helm: extract it now, so a wrong checksum fails before any test.
bash scripts/helm.sh >/dev/null
# Turbo would otherwise try to reach its telemetry host, which CI machines cannot.
export TURBO_TELEMETRY_DISABLED=1
# The packages' own tests two packages at a time (each file has its own database and NATS
# namespace, and they mostly wait on servers), then the end-to-end suite alone: its tests start
# every service as a process and measure memory and latency, so they get the machine to themselves.
# The suite runs even when a package failed, so one run shows every failure.
status=0
# Lint and typecheck first (about 2.5 minutes here): a type error is cheaper to read than the test
# failures it causes. They do not stop the tests, so one run still shows everything.
pnpm run lint || status=1
pnpm run typecheck || status=1
pnpm run test:unit || status=1
pnpm run test:e2e || status=1
exit "$status"
