#!/usr/bin/env bash
# Build a Debian bookworm + Python 3.11 base image without any container registry.
#
# For air-gapped hosts and for CI (which cannot pull python:3.11-slim): debootstrap a minimal
# root file system from the Debian mirror apt already uses, copy in this host's CA bundle (so pip
# inside `docker build` trusts the same TLS-intercepting proxies the host does), and `docker import` it.
# Then build the stack with BASE_IMAGE=<the tag printed at the end>.
#
# Usage: scripts/make-local-base-image.sh [TAG]     (default tag: local/python:3.11-bookworm)
set -euo pipefail

tag="${1:-local/python:3.11-bookworm}"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag already exists"
  exit 0
fi

command -v debootstrap >/dev/null || { echo "debootstrap is required (apt-get install debootstrap)" >&2; exit 1; }

# The mirror apt is configured with (deb822 .sources or classic .list), so no host is hard-coded here.
mirror=$(grep -hoE '^URIs: *\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
if [ -z "$mirror" ]; then
  mirror=$(grep -hoE '^deb +\S+' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
fi
[ -n "$mirror" ] || { echo "no Debian mirror found in /etc/apt sources" >&2; exit 1; }

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrapping bookworm from $mirror into $rootfs ..."
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$rootfs" "$mirror" >/dev/null

# Trust what the host trusts (extra corporate / proxy CAs live in the host bundle only).
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

bundle=/etc/ssl/certs/ca-certificates.crt
tar -C "$rootfs" -c . | docker import \
  --change "ENV LANG=C.UTF-8" \
  --change "ENV PIP_CERT=$bundle" \
  --change "ENV SSL_CERT_FILE=$bundle" \
  --change "ENV REQUESTS_CA_BUNDLE=$bundle" \
  --change 'CMD ["python3"]' \
  - "$tag" >/dev/null
echo "built base image $tag"
