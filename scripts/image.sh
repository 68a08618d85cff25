#!/usr/bin/env bash
# Builds the Postroom container image (Containerfile) with podman, or docker where there is no
# podman, and prints its name.
#
#   bash scripts/image.sh [--tag NAME] [--base IMAGE] [--rootfs DIR]
#
#   --tag     image name (default localhost/postroom/postroom:<version of deploy/image>, what
#             the Helm chart's values.yaml points at)
#   --base    a node:20-slim-style base image (default: $POSTROOM_BASE_IMAGE, else
#             localhost/postroom/node-base:<node version>, which this script makes from this
#             machine's own node binary when it does not exist: no registry needed)
#   --rootfs  also export the built image's filesystem into DIR (emptied first), so that it can
#             be run with chroot where containers cannot run
#
# Steps: compile the services (scripts/transpile.mjs), `pnpm deploy --prod` the image package
# (deploy/image: the five services and their production dependencies, nothing else) into a
# build context, then a build whose steps are COPY only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'image: %s\n' "$*" >&2; }

version=$(node -p 'require("./deploy/image/package.json").version')
tag="localhost/postroom/postroom:$version"
base=${POSTROOM_BASE_IMAGE:-}
rootfs=""
while [ $# -gt 0 ]; do
  case "$1" in
  --tag) tag=$2; shift 2 ;;
  --base) base=$2; shift 2 ;;
  --rootfs) rootfs=$2; shift 2 ;;
  *) say "unknown argument $1 (see the comment at the top of scripts/image.sh)"; exit 2 ;;
  esac
done

if command -v podman >/dev/null 2>&1; then
  engine=podman
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  engine=docker
else
  say "neither podman nor a working docker found: install podman (apt-get install -y podman)"
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/postroom-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- The base ---------------------------------------------------------------------------------
# A minimal node:20-slim look-alike: this machine's node at /usr/local/bin/node, the shared
# libraries it links (from ldd), the dynamic loader, CA certificates and a /tmp. Imported as a
# tarball, so no registry is needed; a real base (docker.io/library/node:20-slim) works the same.
make_base() {
  local node_bin dir lib
  node_bin=$(readlink -f "$(command -v node)")
  dir=$work/base
  mkdir -p "$dir/usr/local/bin" "$dir/tmp" "$dir/etc/ssl/certs"
  chmod 1777 "$dir/tmp"
  cp "$node_bin" "$dir/usr/local/bin/node"
  for lib in $(ldd "$node_bin" | grep -o '/[^ ]*'); do
    mkdir -p "$dir$(dirname "$lib")"
    cp -L "$lib" "$dir$lib"
  done
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/usr/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'root:x:0:\n' >"$dir/etc/group"
  tar -C "$dir" -cf "$work/base.tar" .
  "$engine" import --change 'CMD ["/usr/local/bin/node"]' "$work/base.tar" "$1" >/dev/null
}

if [ -z "$base" ]; then
  base="localhost/postroom/node-base:$(node -p process.versions.node)"
  if ! "$engine" image inspect "$base" >/dev/null 2>&1; then
    say "making the base $base from $(readlink -f "$(command -v node)")"
    make_base "$base"
  fi
fi

# --- The context: compiled services, production dependencies only ----------------------------
say "compiling the services"
node scripts/transpile.mjs 2>/dev/null
say "pnpm deploy --prod"
pnpm --silent --filter @postroom/image deploy --prod "$work/context/app" >/dev/null
# pnpm deploy leaves its lockfile and workspace file in the target; the image needs neither.
rm -f "$work/context/app/pnpm-lock.yaml" "$work/context/app/pnpm-workspace.yaml"
cp deploy/image/entrypoint.mjs "$work/context/app/"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\npostroom:x:10001:10001:postroom:/nonexistent:/usr/sbin/nologin\n' >"$work/context/passwd"
printf 'root:x:0:\npostroom:x:10001:\n' >"$work/context/group"

# --- The build --------------------------------------------------------------------------------
say "building $tag on $base with $engine"
previous=$("$engine" image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
"$engine" build --quiet --build-arg "BASE_IMAGE=$base" -f Containerfile -t "$tag" "$work/context" >/dev/null
# The image this tag named before is now nameless; remove it unless something still uses it, so
# rebuilding does not pile up images (a machine-wide prune would take other people's too).
current=$("$engine" image inspect --format '{{.Id}}' "$tag")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  "$engine" rmi "$previous" >/dev/null 2>&1 || true
fi

if [ -n "$rootfs" ]; then
  # create + export: the image's merged filesystem as one tar, without running anything.
  cid=$("$engine" create "$tag")
  rm -rf "$rootfs" && mkdir -p "$rootfs"
  "$engine" export "$cid" | tar -C "$rootfs" -xf -
  "$engine" rm "$cid" >/dev/null
fi
echo "$tag"
