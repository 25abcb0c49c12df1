// Package e2e tests katatrace end to end: built binaries, a real Jaeger v2
// (bound to 127.0.0.1 on free ports), the real jaeger-client-go as the
// client, Debian's socat as the legacy peer. Run it with make e2e, which
// builds bin/katatrace and bin/jaeger and sets KATATRACE_BIN and JAEGER_BIN.
package e2e
