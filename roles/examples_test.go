package roles

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

var exampleRE = regexp.MustCompile(`\(example: ([^)]+)\)`)

// TestAddressExamplesWorkForTheirRole: for every role and every address
// flag, a value without a scheme and one of a scheme the flag refuses are
// refused with an example, and that example, given to the same flag, is
// taken: no example a role prints is another role's (a guest's
// vsock://2:PORT for a host's listener).
func TestAddressExamplesWorkForTheirRole(t *testing.T) {
	for _, r := range All() {
		var g Globals
		parser, err := kong.New(r.New(), append(kongOptions(Options{}, r.Name, r.Help), kong.Embed(&g))...)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range parser.Model.Flags {
			tag := strings.Fields(f.Tag.Get("addr"))
			if len(tag) < 2 {
				continue
			}
			t.Run(r.Name+"/"+f.Name, func(t *testing.T) {
				bad := "udp://127.0.0.1:9"
				if tag[1] == "udp" || strings.Contains(f.Tag.Get("addr"), " udp") {
					bad = "serial:///dev/ttyS1"
				}
				for _, v := range []string{"no-scheme", bad} {
					msg := parseErr(t, r, "--"+f.Name, v)
					m := exampleRE.FindStringSubmatch(msg)
					if m == nil {
						t.Fatalf("--%s %s: no example in %q", f.Name, v, msg)
					}
					if strings.Contains(msg, "--"+f.Name) && !strings.Contains(msg, "want "+strings.Join(schemeWords(tag[1:]), "")) && v == "no-scheme" {
						t.Errorf("--%s %s: the schemes listed are not the flag's %v: %q", f.Name, v, tag[1:], msg)
					}
					if tag[0] == "listen" && strings.HasPrefix(m[1], "vsock://") && !strings.HasPrefix(m[1], "vsock://any:") {
						t.Errorf("--%s %s: a listener's example %s binds one CID only (a guest's host)", f.Name, v, m[1])
					}
					if got := parseErr(t, r, "--"+f.Name, m[1]); strings.Contains(got, "--"+f.Name) {
						t.Errorf("--%s %s: the example %s is refused in turn: %q", f.Name, v, m[1], got)
					}
				}
			})
		}
	}
}

// schemeWords is the start of the flag's scheme list as an error puts it.
func schemeWords(schemes []string) []string { return []string{schemes[0] + "://"} }

// parseErr parses the role's command line with flag=value and returns the
// error's message as usageError prints it ("" when accepted).
func parseErr(t *testing.T, r Role, flag, value string) string {
	t.Helper()
	var g Globals
	var stderr bytes.Buffer
	parser, err := kong.New(r.New(), append(kongOptions(Options{Stderr: &stderr}, r.Name, r.Help), kong.Embed(&g))...)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{flag, value}
	switch flag {
	case "--journal-from", "--journal-to":
		args = append(args, "--journal")
	case "--grpc-listen":
		args = append(args, "--grpc-upstream", "unix:///run/kata-agent.sock")
	case "--grpc-upstream":
		args = append(args, "--grpc-listen", "vsock://any:1024")
	}
	if r.Name == "kata-agent-tracer" {
		args = append(args, "--", "/bin/true")
	}
	if _, err := parser.Parse(args); err != nil {
		usageError(parser, err, args)
	}
	return stderr.String()
}
