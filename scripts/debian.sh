# Shared by scripts/test-env.sh and scripts/up.sh: installing Debian packages the way tests and the
# demo need them. Source it; it defines say, is_root, have, tcp_open, wait_tcp and apt_install, and
# collects what a non-root user must install in the array `missing`. The caller sets SAY_PREFIX.

say() { printf '%s: %s\n' "${SAY_PREFIX:-postroom}" "$*" >&2; }

is_root() { [ "$(id -u)" = 0 ]; }

# Debian keeps daemons in /usr/sbin, which a non-root PATH often lacks.
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]; }

tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

wait_tcp() { # host port what
  local i
  for i in $(seq 1 100); do
    if tcp_open "$1" "$2"; then return 0; fi
    sleep 0.1
  done
  say "$3 did not start listening on $1:$2"
  return 1
}

missing=() # packages a non-root user has to install
apt_updated=0

apt_install() {
  if ! is_root; then
    missing+=("$@")
    return 0
  fi
  say "installing Debian packages: $*"
  # Debian's maintainer scripts start each daemon on its default port (25, 143, 4222, 5432...).
  # Tests start their own instances on free ports, so block that with a policy-rc.d, but leave a
  # policy-rc.d that was already there alone.
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local status=0
  {
    if [ "$apt_updated" = 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      apt_updated=1
    fi
    # Postfix asks what kind of mail server this is; tests write their own main.cf.
    if printf '%s\n' "$@" | grep -qx postfix && command -v debconf-set-selections >/dev/null; then
      printf 'postfix postfix/main_mailer_type select No configuration\npostfix postfix/mailname string localhost\n' |
        debconf-set-selections
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
  } || status=$?
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  return "$status"
}

