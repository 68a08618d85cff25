#!/usr/bin/env bash
# The one command a newcomer runs. Checks Node.js and pnpm, installs the dependencies, then:
#   bash scripts/up.sh                 `postroom demo`: local mail servers, a demo tenant, agents and
#                                      customer emails (installs Dovecot and Postfix from Debian as root)
#   POSTROOM_CONFIG=my.yaml bash scripts/up.sh   `postroom up` with your own configuration
# Extra arguments go to the command (demo: --reset, --port N, --data-dir DIR; up: --only, --data-dir).
set -euo pipefail
cd "$(dirname "$0")/.."
SAY_PREFIX=up.sh
# shellcheck source=scripts/debian.sh
source scripts/debian.sh

if ! command -v node >/dev/null 2>&1; then
  say "Node.js is not installed; install Node.js 20 (20.11 or newer) and run this again."
  exit 1
fi
# package.json says "node": ">=20.11"; --import with tsx needs at least that.
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 11) ? 0 : 1)'; then
  say "Node.js $(node --version) is too old; install Node.js 20.11 or newer and run this again."
  exit 1
fi

if ! command -v pnpm >/dev/null 2>&1; then
  say "pnpm not found; installing it with: npm i -g pnpm@12.4.2"
  npm i -g pnpm@12.4.2
fi

pnpm install --frozen-lockfile

command=(up --config "${POSTROOM_CONFIG:-}")
if [ -z "${POSTROOM_CONFIG:-}" ]; then
  command=(demo)
  # The demo's own mail servers, as the tests install them (scripts/debian.sh).
  if ! have dovecot || [ ! -x /usr/lib/dovecot/imap ] || [ ! -x /usr/lib/dovecot/pop3 ] ||
    [ ! -x /usr/lib/dovecot/lmtp ] || ! have postfix || ! have openssl; then
    apt_install dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix openssl
  fi
  # `postroom up` starts its own nats-server when none answers on 127.0.0.1:4222.
  if ! tcp_open 127.0.0.1 4222 && [ -z "${NATS_URL:-}" ]; then
    have nats-server || apt_install nats-server
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    say "the demo needs these Debian packages; as root run:"
    printf '  apt-get install -y --no-install-recommends %s\n' "${missing[*]}" >&2
    say "or use your own mailbox: POSTROOM_CONFIG=my.yaml bash scripts/up.sh (see examples/postroom.example.yaml)"
    exit 1
  fi
fi
# node itself rather than `pnpm postroom`: pnpm answers a terminal's Ctrl-C with "Command failed"
# and a signal exit even when postroom stopped cleanly with 0.
exec node --conditions=source --import tsx packages/cli/src/main.ts "${command[@]}" "$@"
