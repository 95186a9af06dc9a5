#!/usr/bin/env bash
# Builds the notifyhub image (default tag notifyhub:local) on the Debian base image
# that base.sh builds from Debian's packages (itself skipped when that tag exists).
#
#   bash .ci/image/build.sh                   # notifyhub-base:bookworm, then notifyhub:local
#   IMAGE=notifyhub:1.2 bash .ci/image/build.sh
#   BASE_IMAGE=python:3.11-slim-bookworm bash .ci/image/build.sh   # with a registry at hand
#
# The build runs on the host's network (`--network host`), so pip reaches PyPI the way
# the host does; the host's locally added CA certificates
# (/usr/local/share/ca-certificates/*.crt, e.g. an intercepting proxy's) are handed to
# the build stage's pip only. Extra arguments go to `docker build`.
set -euo pipefail
cd "$(dirname "$0")/../.."

image="${IMAGE:-notifyhub:local}"
base="${BASE_IMAGE:-notifyhub-base:bookworm}"
if [ "$base" = "${BASE_TAG:-notifyhub-base:bookworm}" ]; then
    bash .ci/image/base.sh
fi

extra_ca=""
for cert in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$cert" ] && extra_ca+="$(cat "$cert")"$'\n'
done

echo "==> docker build $image on $base"
docker build --network host -f .ci/image/Dockerfile \
    --build-arg BASE_IMAGE="$base" --build-arg EXTRA_CA_CERTS="$extra_ca" \
    -t "$image" "$@" .
