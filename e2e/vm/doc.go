// Package vm boots a real guest: Debian's stock kernel under QEMU (software
// emulation), an initramfs holding only the static katatrace binary, its
// kata-agent-tracer symlink as init and a static test agent, with traces
// leaving over a serial port wired to a host relay's unix socket. Run by
// make e2e; .ci/run installs QEMU and fetches the kernel
// (scripts/fetch-vm-kernel.sh).
package vm
