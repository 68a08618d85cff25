#!/usr/bin/env bash
# Makes this machine ready for `pnpm test`: the mail servers the testkit starts per test
# (Dovecot IMAP/POP3/LMTP, Postfix, mbsync, openssl), a NATS server with JetStream, a PostgreSQL
# that user postgres reaches over TCP without a password, and pnpm.
#
# Idempotent and fast when everything is already there (a few `command -v` and TCP probes).
# As root it installs what is missing from Debian packages; otherwise it prints what to install
# and exits 1. Environment: NATS_URL (default nats://127.0.0.1:4222), PGHOST/PGPORT (default
# 127.0.0.1:5432), POSTROOM_TEST_ENV_DIR (where a NATS it starts keeps data and logs).
set -euo pipefail

NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
PG_HOST=${PGHOST:-127.0.0.1}
PG_PORT=${PGPORT:-5432}
STATE_DIR=${POSTROOM_TEST_ENV_DIR:-/var/tmp/postroom-test-env}
PNPM_VERSION=12.4.2

SAY_PREFIX=test-env
# shellcheck source=scripts/debian.sh
source "$(dirname "$0")/debian.sh"

# --- Node and pnpm ----------------------------------------------------------------------------
if ! command -v node >/dev/null 2>&1; then
  say "Node.js 20.11 or later is required (https://nodejs.org or your distribution's nodejs package)"
  exit 1
fi
if ! command -v pnpm >/dev/null 2>&1; then
  if is_root; then
    say "installing pnpm@$PNPM_VERSION"
    npm install -g --silent "pnpm@$PNPM_VERSION"
  else
    missing_pnpm=1
  fi
fi

# --- Mail servers -----------------------------------------------------------------------------
# The testkit runs the binaries directly; the Debian services stay stopped.
if ! have dovecot || [ ! -x /usr/lib/dovecot/imap ] || [ ! -x /usr/lib/dovecot/pop3 ] ||
  [ ! -x /usr/lib/dovecot/lmtp ] || ! have postfix || ! have mbsync || ! have openssl; then
  apt_install dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix isync openssl
fi

# --- podman, for the image test (scripts/image.sh builds with it; nothing runs in a container) --
have podman || apt_install podman

# --- ss (iproute2), for the chaos run: it notes a killed sender's connections to Postfix --------
have ss || apt_install iproute2

# --- unzip, for scripts/helm.sh (the chart tests' Helm comes out of an npm package's zip) --------
have unzip || apt_install unzip

# --- Browser for the agent desktop test -------------------------------------------------------
# Debian's Chromium, driven by playwright-core; Playwright's own browser downloads are never used.
if [ ! -x /usr/bin/chromium ]; then
  apt_install chromium
fi

# --- NATS with JetStream ----------------------------------------------------------------------
nats_hostport=${NATS_URL#*://}
nats_hostport=${nats_hostport%%/*}
nats_hostport=${nats_hostport##*@}
nats_host=${nats_hostport%:*}
nats_port=${nats_hostport##*:}
[ "$nats_port" = "$nats_hostport" ] && nats_port=4222
if ! tcp_open "$nats_host" "$nats_port"; then
  case "$nats_host" in
  127.0.0.1 | localhost) ;;
  *)
    say "NATS is not reachable at $NATS_URL; start it there or unset NATS_URL to use a local one"
    exit 1
    ;;
  esac
  have nats-server || apt_install nats-server
  if is_root || have nats-server; then
    mkdir -p "$STATE_DIR/nats"
    say "starting nats-server with JetStream on 127.0.0.1:$nats_port (log: $STATE_DIR/nats.log)"
    nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
    # setsid + nohup: the server outlives this script; its output goes to a file, not our pipes.
    setsid nohup "$nats_bin" -a 127.0.0.1 -p "$nats_port" -js -sd "$STATE_DIR/nats" \
      >>"$STATE_DIR/nats.log" 2>&1 </dev/null &
    wait_tcp 127.0.0.1 "$nats_port" nats-server
  fi
fi

# --- PostgreSQL -------------------------------------------------------------------------------
if ! tcp_open "$PG_HOST" "$PG_PORT"; then
  case "$PG_HOST" in
  127.0.0.1 | localhost) ;;
  *)
    say "PostgreSQL is not reachable at $PG_HOST:$PG_PORT; start it or unset PGHOST"
    exit 1
    ;;
  esac
  have pg_ctlcluster || apt_install postgresql
  if is_root && have pg_ctlcluster; then
    # Use Debian's cluster on that port (the package makes "main" on 5432), or make one there.
    read -r pg_version pg_cluster _ < <(pg_lsclusters -h | awk -v port="$PG_PORT" '$3 == port') || true
    if [ -z "${pg_version:-}" ]; then
      pg_version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
      pg_cluster=$([ "$PG_PORT" = 5432 ] && echo main || echo "test$PG_PORT")
      say "creating PostgreSQL cluster $pg_version/$pg_cluster on port $PG_PORT"
      pg_createcluster --port "$PG_PORT" "$pg_version" "$pg_cluster" >/dev/null
    fi
    hba=/etc/postgresql/$pg_version/$pg_cluster/pg_hba.conf
    if ! grep -q '^# postroom test-env' "$hba"; then
      say "allowing passwordless TCP logins from 127.0.0.1 and ::1 in $hba (test machines only)"
      {
        echo '# postroom test-env: tests connect as postgres over TCP without a password'
        echo 'host all all 127.0.0.1/32 trust'
        echo 'host all all ::1/128 trust'
        cat "$hba"
      } >"$hba.new"
      chown --reference="$hba" "$hba.new"
      chmod --reference="$hba" "$hba.new"
      mv "$hba.new" "$hba"
    fi
    say "starting PostgreSQL $pg_version/$pg_cluster"
    pg_ctlcluster "$pg_version" "$pg_cluster" start || pg_ctlcluster "$pg_version" "$pg_cluster" reload
    wait_tcp "$PG_HOST" "$PG_PORT" PostgreSQL
  fi
fi

# --- Verdict for non-root users ---------------------------------------------------------------
if [ "${#missing[@]}" -gt 0 ] || [ "${missing_pnpm:-0}" = 1 ]; then
  say "this machine is not ready for the tests, and installing needs root. Please run:"
  if [ "${#missing[@]}" -gt 0 ]; then
    printf '  sudo apt-get install -y %s\n' "$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')" >&2
  fi
  [ "${missing_pnpm:-0}" = 1 ] && printf '  npm install -g pnpm@%s\n' "$PNPM_VERSION" >&2
  printf '  then run scripts/test-env.sh again (as root it also starts NATS and PostgreSQL).\n' >&2
  exit 1
fi
if ! tcp_open "$nats_host" "$nats_port"; then
  say "NATS is not running on $nats_host:$nats_port: start it with 'nats-server -js' (or run this script as root)"
  exit 1
fi
if ! tcp_open "$PG_HOST" "$PG_PORT"; then
  say "PostgreSQL is not running on $PG_HOST:$PG_PORT: start it (or run this script as root)"
  exit 1
fi
say "ready"
