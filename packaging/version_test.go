package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersion runs version.sh (make packages' PKG_VERSION) in git
// repositories of each shape git describe meets, and compares what it
// gives with the tag's own version as dpkg and rpm do: commits after a
// tag sort above it, a pre-release tag below its release.
func TestVersion(t *testing.T) {
	for _, tool := range []string{"git", "dpkg"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	script, err := filepath.Abs("version.sh")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		tag     string // none: no tag
		after   int    // commits after the tag
		want    string // HASH: the head's short hash
		release string // the version it sorts against
		order   string // dpkg's relation to release: gt, lt, eq
	}{
		{"a tag", "v1.2.3", 0, "1.2.3", "1.2.3", "eq"},
		{"commits after a tag", "v1.2.3", 5, "1.2.3+git5.gHASH", "1.2.3", "gt"},
		{"commits after a tag, below the next", "v1.2.3", 5, "1.2.3+git5.gHASH", "1.2.4~rc1", "lt"},
		{"a pre-release tag", "v1.2.3-rc1", 0, "1.2.3~rc1", "1.2.3", "lt"},
		{"commits after a pre-release tag", "v1.2.3-rc1", 2, "1.2.3~rc1+git2.gHASH", "1.2.3~rc1", "gt"},
		{"no tag", "", 3, "0.0.0~git4.HASH", "0.0.1", "lt"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			git := func(args ...string) string {
				t.Helper()
				cmd := exec.Command("git", args...)
				cmd.Dir = dir
				cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("git %q: %v: %s", args, err, out)
				}
				return strings.TrimSpace(string(out))
			}
			git("init", "-q")
			git("commit", "-q", "--allow-empty", "-m", "0")
			if c.tag != "" {
				git("tag", c.tag)
			}
			for i := range c.after {
				git("commit", "-q", "--allow-empty", "-m", string(rune('a'+i)))
			}
			cmd := exec.Command("/bin/sh", script)
			cmd.Dir = dir
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("version.sh: %v", err)
			}
			got := strings.TrimSpace(string(out))
			if want := strings.ReplaceAll(c.want, "HASH", git("rev-parse", "--short", "HEAD")); got != want {
				t.Fatalf("version.sh gives %q, want %q", got, want)
			}
			if err := exec.Command("dpkg", "--compare-versions", got, c.order, c.release).Run(); err != nil {
				t.Errorf("dpkg: %s is not %s %s", got, c.order, c.release)
			}
			if _, err := exec.LookPath("rpm"); err == nil {
				want := map[string]string{"gt": "1", "lt": "-1", "eq": "0"}[c.order]
				out, err := exec.Command("rpm", "--eval", `%{lua:print(rpm.vercmp("`+got+`", "`+c.release+`"))}`).Output()
				if err != nil || strings.TrimSpace(string(out)) != want {
					t.Errorf("rpm: vercmp(%s, %s) = %q (%v), want %s", got, c.release, out, err, want)
				}
			}
		})
	}
}
