package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
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
	cmd := makeCmd(repo, "-n", "--no-print-directory", "-o", filepath.Join(repo, "bin/nfpm"), "packages", "PKG_VERSION=1.0.0",
		"BIN_SRC="+filepath.Join(tmp, "katatrace"), "PKG_DIST="+filepath.Join(tmp, "dist"), "PKG_STAGE="+filepath.Join(tmp, "stage"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n packages: %v\n%s", err, out)
	}
	repoOut := regexp.MustCompile(`(^|[\s=])(` + regexp.QuoteMeta(repo) + `/)?(bin/katatrace|dist)\b`)
	if m := repoOut.FindAll(out, -1); m != nil {
		t.Errorf("make packages, sent elsewhere, still names the repo's bin/katatrace or dist/ (%q):\n%s", m, out)
	}
}

// TestPackagesOfAnotherArch: make packages for an architecture not this
// machine's refuses, saying why, unless BIN_SRC names the binary: it would
// build (and run, for the role links) this machine's binary and label it
// PKG_ARCH. Given BIN_SRC, it goes on.
func TestPackagesOfAnotherArch(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	other := "arm64"
	if runtime.GOARCH == other {
		other = "amd64"
	}
	tmp := t.TempDir()
	for _, tt := range []struct {
		name   string
		args   []string
		refuse bool
	}{
		{"no binary", nil, true},
		{"a binary given", []string{"BIN_SRC=" + filepath.Join(tmp, "katatrace")}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"-n", "--no-print-directory", "-o", filepath.Join(repo, "bin/nfpm"), "packages", "PKG_VERSION=1.0.0", "PKG_ARCH=" + other,
				"PKG_DIST=" + filepath.Join(tmp, "dist"), "PKG_STAGE=" + filepath.Join(tmp, "stage")}, tt.args...)
			cmd := makeCmd(repo, args...)
			out, err := cmd.CombinedOutput()
			refused := err != nil && strings.Contains(string(out), "PKG_ARCH="+other+" is not this machine's architecture ("+runtime.GOARCH+")")
			if refused != tt.refuse || (err != nil) != tt.refuse {
				t.Errorf("make -n packages PKG_ARCH=%s %v: %v\n%s", other, tt.args, err, out)
			}
		})
	}
}

// makeCmd is make in repo with args, told nothing by the make that runs
// these tests (make packages does): its MAKEFLAGS would pass on its
// command line's variables (a BIN_SRC, say) and change what is tested.
func makeCmd(repo string, args ...string) *exec.Cmd {
	cmd := exec.Command("make", args...)
	cmd.Dir = repo
	for _, kv := range os.Environ() {
		switch name, _, _ := strings.Cut(kv, "="); name {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "BIN_SRC", "PKG_ARCH", "PKG_VERSION", "PKG_DIST", "PKG_STAGE", "VERSION":
		default:
			cmd.Env = append(cmd.Env, kv)
		}
	}
	return cmd
}
