package roles_test

import (
	"strings"
	"testing"
)

// TestKongRewritesHold pins what katatrace changes in kong's output by
// matching its text (cli.go): the shim's usage line in the order it is
// given, and a negative value read as a short flag. A kong upgrade that
// changes that text fails here, not silently.
func TestKongRewritesHold(t *testing.T) {
	t.Parallel()
	code, out, _ := run(t, nil, "kata-agent-tracer", "--help")
	if first, _, _ := strings.Cut(out, "\n"); code != 0 || first != "Usage: kata-agent-tracer [flags] [--] [<agent> ...]" {
		t.Fatalf("usage line %q (exit %d): kong's usage text changed; see flagsFirstHelp", first, code)
	}
	code, _, errOut := run(t, nil, "kata-agent-tracer", "--stop-timeout", "-1s", "--", "/bin/true")
	if code != 2 || !strings.Contains(errOut, `--stop-timeout needs a value: "-1s" is not one`) {
		t.Fatalf("exit %d, %q: kong's short-flag error changed; see shortFlagRE", code, errOut)
	}
}
