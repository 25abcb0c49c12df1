// Package testhost is the host relay as tests use it: vsock-to-udp-server
// listening on a unix socket (where a guest relay, a serial port of QEMU or
// a shim connects), writing every span it gets as JSON lines to a file.
package testhost
