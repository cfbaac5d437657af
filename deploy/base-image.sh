#!/usr/bin/env bash
# The base image both Containerfiles default to, made without any container registry:
# Debian bookworm (minbase + python3, python3-venv, ca-certificates) by mmdebstrap from the
# Debian mirror, then `podman import`. Cached twice: not rebuilt when podman already has the
# image, and the root filesystem tarball is kept in .cache/deploy/ (an import takes seconds,
# mmdebstrap a few minutes). CI starts without either.
#
#   deploy/base-image.sh [IMAGE]          default localhost/mcpgw-base:bookworm
#   MCPGW_DEBIAN_MIRROR=http://…/debian   default http://deb.debian.org/debian
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
image=${1:-localhost/mcpgw-base:bookworm}
mirror=${MCPGW_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache="$repo/.cache/deploy"
rootfs="$cache/mcpgw-base-bookworm.tar"
. "$here/podman/env.sh"

if podman image exists "$image"; then
  echo "base image $image: present"
  exit 0
fi
if [ ! -s "$rootfs" ]; then
  command -v mmdebstrap >/dev/null || { echo "error: mmdebstrap is missing; run deploy/podman/setup.sh (or apt-get install mmdebstrap)" >&2; exit 1; }
  mkdir -p "$cache"
  start=$(date +%s)
  # No docs, man pages or locales: nothing in the image reads them.
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$cache/mcpgw-base-bookworm.part.tar" "$mirror"
  mv "$cache/mcpgw-base-bookworm.part.tar" "$rootfs"
  echo "base root filesystem: $rootfs ($(du -h "$rootfs" | cut -f1), $(( $(date +%s) - start )) s)"
fi
podman import --quiet \
  --change 'CMD ["/bin/bash"]' \
  --change 'LABEL org.opencontainers.image.title=mcpgw-base org.opencontainers.image.description="Debian bookworm minbase + python3 (mmdebstrap)"' \
  "$rootfs" "$image" >/dev/null
echo "base image $image: imported from $rootfs"
