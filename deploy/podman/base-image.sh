#!/usr/bin/env bash
# Builds a minimal Debian image with Python 3.11 for machines that cannot reach a container
# registry: debootstrap from the Debian mirror, then `podman import`. Cached by its tag: a second
# run does nothing. Containerfiles use it via `--build-arg BASE_IMAGE=localhost/aistack-base:bookworm`.
set -euo pipefail
TAG=${AISTACK_BASE_IMAGE:-localhost/aistack-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if podman image exists "$TAG"; then echo "$TAG"; exit 0; fi
command -v debootstrap >/dev/null || { echo "debootstrap is needed (apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "debootstrap needs root" >&2; exit 1; }

ROOTFS=$(mktemp -d /var/tmp/aistack-base.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,git \
  bookworm "$ROOTFS" "$MIRROR" >&2
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin
# `python` like the python:3.11-slim image has, so one Containerfile serves both bases
ln -sf python3 "$ROOTFS/usr/bin/python"
tar -C "$ROOTFS" -c . | podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' - "$TAG" >&2
echo "$TAG"
