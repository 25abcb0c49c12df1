#!/usr/bin/env bash
# Fetch Debian's stock kernel for the VM tests: the linux-image-amd64
# metapackage names the image package; apt-get download fetches it (no
# install), dpkg-deb extracts it. vmlinuz is copied to the given path, and
# the modules the systemd guest test loads (vsock,
# vmw_vsock_virtio_transport_common, vsock_loopback: real AF_VSOCK through
# CID 1 without a host; virtio, virtio_ring, the virtio PCI modules and
# virtio_console: its virtio-serial uplink) to modules/ beside it.
set -euo pipefail
out=${1:-e2e/vm/.cache/vmlinuz}
mods=$(dirname "$out")/modules
want=(vsock vmw_vsock_virtio_transport_common vsock_loopback virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_console)
have=1
for m in "${want[@]}"; do [[ -s $mods/$m.ko ]] || have=0; done
if [[ -s $out && $have == 1 ]]; then
	echo "kernel already at $out"
	exit 0
fi
mkdir -p "$(dirname "$out")" "$mods"
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
for m in "${want[@]}"; do
	cp "$(find "$work"/root/lib/modules -name "$m.ko" | head -n1)" "$mods/"
done
echo "kernel $image at $out, modules in $mods"
