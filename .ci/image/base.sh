#!/usr/bin/env bash
# Builds notifyhub-base:bookworm, a minimal Debian bookworm with python3 and python3-venv,
# from Debian's packages alone (debootstrap + docker import), for machines that reach
# Debian's mirror and PyPI but no image registry. The image Dockerfile builds on it with
# `--build-arg BASE_IMAGE=notifyhub-base:bookworm` (docs/deployment.md).
#
#   bash .ci/image/base.sh            # builds it unless the tag already exists
#   bash .ci/image/base.sh --rebuild  # builds it again (e.g. for Debian's security updates)
#
# Needs root (debootstrap, chroot), debootstrap and a running Docker daemon.
# DEBIAN_MIRROR overrides the mirror (default: http://deb.debian.org/debian);
# BASE_TAG the tag (default: notifyhub-base:bookworm).
set -euo pipefail

tag="${BASE_TAG:-notifyhub-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
packages=python3,python3-venv,ca-certificates

if [ "${1:-}" != "--rebuild" ] && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag exists (--rebuild builds it again)"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "base.sh: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "base.sh: apt-get install debootstrap" >&2; exit 1; }

root="$(mktemp -d /tmp/notifyhub-base.XXXXXX)"
chmod 755 "$root"  # apt downloads as _apt inside the chroot
cleanup() {
    umount "$root/proc" 2>/dev/null || true
    rm -rf "$root"
}
trap cleanup EXIT

echo "==> debootstrap $suite from $mirror (minbase + $packages)"
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror"

# The point releases' and security updates, which debootstrap's one suite lacks.
security="${mirror%/debian}/debian-security"
cat > "$root/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
SOURCES
mount -t proc proc "$root/proc"
echo "==> security and point-release updates"
chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -c \
    'apt-get update -q && apt-get upgrade -y -q && apt-get clean'
umount "$root/proc"

# What a container never needs: package lists (images that add packages run apt-get
# update first), caches, documentation and the locales other than C.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/tmp/* "$root"/root/.cache
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
# Silence debconf in images built FROM this one, and keep the container's own resolver.
: > "$root/etc/resolv.conf"
: > "$root/etc/hostname"

echo "==> docker import $tag"
tar -C "$root" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    - "$tag"
docker image ls "$tag"
