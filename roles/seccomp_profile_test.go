package roles_test

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/katatrace/katatrace/roles"
	"github.com/katatrace/katatrace/seccomp"
)

func TestSeccompProfile(t *testing.T) {
	t.Parallel()
	profile := func(arch string) string {
		b, err := seccomp.Profile(arch)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	dir := t.TempDir()
	// A file where the directory would go: --write cannot make it.
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	// An older profile in place: replaced whole (a longer one would show
	// its tail were it written over).
	old := filepath.Join(dir, "old", "katatrace.json")
	os.MkdirAll(filepath.Dir(old), 0o755)
	os.WriteFile(old, bytes.Repeat([]byte("x"), 64<<10), 0o600)
	for _, c := range []struct {
		name     string
		args     []string
		code     int
		stdout   string
		file     string // written: holds the profile of arch
		arch     string
		errorHas []string
	}{
		{name: "prints this machine's", stdout: profile(runtime.GOARCH)},
		{name: "prints another arch's", args: []string{"--arch", "s390x"}, stdout: profile("s390x")},
		{name: "writes, making the directory", args: []string{"--write", filepath.Join(dir, "new", "katatrace", "forwarder.json")},
			file: filepath.Join(dir, "new", "katatrace", "forwarder.json"), arch: runtime.GOARCH, errorHas: []string{"seccomp profile written"}},
		{name: "replaces a profile", args: []string{"--write", old, "--arch", "arm64"}, file: old, arch: "arm64"},
		{name: "an arch without one", args: []string{"--arch", "riscv64"}, code: roles.ExitFailure,
			errorHas: []string{`--arch: no seccomp profile for \"riscv64\"`, "amd64, arm64, ppc64le, s390x"}},
		{name: "a directory that cannot be made", args: []string{"--write", filepath.Join(dir, "file", "katatrace.json")}, code: roles.ExitFailure,
			errorHas: []string{"--write: ", "not a directory"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := run(t, nil, roles.BinaryName, append([]string{"seccomp-profile"}, c.args...)...)
			if code != c.code || out != c.stdout {
				t.Fatalf("exit %d (want %d), stdout %d bytes (want %d)\n%s", code, c.code, len(out), len(c.stdout), errOut)
			}
			for _, w := range c.errorHas {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			if c.file == "" {
				return
			}
			b, err := os.ReadFile(c.file)
			if err != nil || string(b) != profile(c.arch) {
				t.Fatalf("%s: %d bytes, %v; want %s's profile", c.file, len(b), err, c.arch)
			}
			if fi, _ := os.Stat(c.file); fi.Mode().Perm() != 0o644 {
				t.Errorf("%s: mode %v, want 0644", c.file, fi.Mode().Perm())
			}
			if ents, _ := os.ReadDir(filepath.Dir(c.file)); len(ents) != 1 {
				t.Errorf("%s holds %d entries, want the profile alone (no temporary file left)", filepath.Dir(c.file), len(ents))
			}
		})
	}
}

func TestSeccompProfileHelp(t *testing.T) {
	t.Parallel()
	code, out, _ := run(t, nil, roles.BinaryName, "--help")
	if code != 0 || !strings.Contains(out, "seccomp-profile") {
		t.Fatalf("katatrace --help: exit %d, no seccomp-profile:\n%s", code, out)
	}
	code, out, _ = run(t, nil, roles.BinaryName, "seccomp-profile", "--help")
	for _, w := range []string{"Usage: katatrace seccomp-profile", "--write=PATH", "atomically", "0644", "--arch=ARCH", "socket(AF_VSOCK)"} {
		if code != 0 || !strings.Contains(out, w) {
			t.Errorf("seccomp-profile --help: exit %d, lacks %q:\n%s", code, w, out)
		}
	}
}
