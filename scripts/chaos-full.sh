#!/usr/bin/env bash
# The full chaos profile (test/chaos/README.md): 10,000 mails to 50 mailboxes under 20 minutes
# of faults, on a three-node JetStream cluster. Not part of CI: it needs an otherwise idle machine
# and well over half an hour. A seed may be given: bash scripts/chaos-full.sh 424242
# The services run from their built dist/ (built here first), as in the e2e suite: a process the
# run kills every few seconds should not spend its restart compiling TypeScript.
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:-$(( RANDOM * 32768 + RANDOM ))}
TURBO_TELEMETRY_DISABLED=1 pnpm exec turbo run build --filter=./services/* --output-logs=errors-only --concurrency=2
POSTROOM_E2E_COMPILED=1 exec pnpm --silent chaos --mails 10000 --minutes 20 --mailboxes 50 --seed "$seed"
