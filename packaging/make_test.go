package packaging

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// TestPackagesElsewhere: make packages with PKG_DIST, PKG_STAGE and
// BIN_SRC set (as the VM suite's upgrade test runs it, beside the e2e
// image tests that read bin/katatrace) neither builds bin/katatrace nor
// writes dist/: make -n's commands name neither.
func TestPackagesElsewhere(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	// -o: nfpm counts as built, whatever its age (it is a tool of bin/,
	// not what this is about).
	cmd := exec.Command("make", "-n", "--no-print-directory", "-o", filepath.Join(repo, "bin/nfpm"), "packages", "PKG_VERSION=1.0.0",
		"BIN_SRC="+filepath.Join(tmp, "katatrace"), "PKG_DIST="+filepath.Join(tmp, "dist"), "PKG_STAGE="+filepath.Join(tmp, "stage"))
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n packages: %v\n%s", err, out)
	}
	repoOut := regexp.MustCompile(`(^|[\s=])(` + regexp.QuoteMeta(repo) + `/)?(bin/katatrace|dist)\b`)
	if m := repoOut.FindAll(out, -1); m != nil {
		t.Errorf("make packages, sent elsewhere, still names the repo's bin/katatrace or dist/ (%q):\n%s", m, out)
	}
}
