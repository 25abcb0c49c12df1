package sink

import (
	"crypto/x509"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// TestTLSWithoutSystemRoots: where the system has no CA roots (katatrace's
// image has none), a TLS sink that takes the system's still verifies a
// public endpoint's chain, by the bundled roots. The check runs in a child
// process: Go loads the system's roots once per process, and here they
// are made absent.
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
	if os.Getenv("KATATRACE_TEST_NO_ROOTS") == "1" {
		if _, err := (OTLPConfig{TLS: true}).tlsConfig(); err != nil {
			t.Fatal(err)
		}
		if _, err := root.Verify(x509.VerifyOptions{}); err != nil {
			t.Fatalf("%s, a public root, not verified without the system's roots: %v", root.Subject, err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestTLSWithoutSystemRoots$", "-test.v")
	empty := t.TempDir()
	cmd.Env = append(os.Environ(), "KATATRACE_TEST_NO_ROOTS=1", "SSL_CERT_FILE="+empty+"/none.pem", "SSL_CERT_DIR="+empty)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
}
