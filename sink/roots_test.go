package sink

import (
	"crypto/x509"
	"log/slog"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// TestTLSWithoutSystemRoots: where the system has no CA roots (katatrace's
// image has none), a TLS sink that takes the system's still verifies a
// public endpoint's chain, by the bundled roots: an otlps:// sink and an
// https:// Jaeger collector alike. Each check runs in a child process: Go
// loads the system's roots once per process, and here they are made
// absent.
func TestTLSWithoutSystemRoots(t *testing.T) {
	var root *x509.Certificate
	for r := range bundle.Roots() {
		if r.Constraint == nil {
			c, err := x509.ParseCertificate(r.Certificate)
			if err != nil {
				t.Fatal(err)
			}
			root = c
			break
		}
	}
	sinks := map[string]func(){
		"otlps": func() {
			if _, err := (OTLPConfig{TLS: true}).tlsConfig(); err != nil {
				t.Fatal(err)
			}
		},
		"collector https": func() {
			// Port 9 (discard): nothing is sent, the sink is only made.
			c := NewCollectorSink("https://127.0.0.1:9/api/traces", 1<<20, 1, 0, slog.New(slog.DiscardHandler))
			if err := c.Close(t.Context()); err != nil {
				t.Fatal(err)
			}
		},
	}
	if name := os.Getenv("KATATRACE_TEST_NO_ROOTS"); name != "" {
		sinks[name]()
		if _, err := root.Verify(x509.VerifyOptions{}); err != nil {
			t.Fatalf("%s, a public root, not verified without the system's roots: %v", root.Subject, err)
		}
		return
	}
	for name := range sinks {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestTLSWithoutSystemRoots$", "-test.v")
			empty := t.TempDir()
			cmd.Env = append(os.Environ(), "KATATRACE_TEST_NO_ROOTS="+name, "SSL_CERT_FILE="+empty+"/none.pem", "SSL_CERT_DIR="+empty)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%v:\n%s", err, out)
			}
		})
	}
}
