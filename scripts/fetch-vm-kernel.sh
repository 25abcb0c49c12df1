#!/usr/bin/env bash
# Fetch Debian's stock kernel for the VM test: the linux-image-amd64
# metapackage names the image package; apt-get download fetches it (no
# install), dpkg-deb extracts it, and vmlinuz is copied to the given path.
set -euo pipefail
out=${1:-e2e/vm/.cache/vmlinuz}
if [[ -s $out ]]; then
	echo "kernel already at $out"
	exit 0
fi
mkdir -p "$(dirname "$out")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
image=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
if [[ -z $image ]]; then
	echo "fetch-vm-kernel: apt-cache does not know linux-image-amd64 (run apt-get update)" >&2
	exit 1
fi
(cd "$work" && apt-get download -q "$image")
dpkg-deb -x "$work"/*.deb "$work/root"
cp "$work"/root/boot/vmlinuz-* "$out"
echo "kernel $image at $out"
