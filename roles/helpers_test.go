package roles_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/katatrace/katatrace/internal/spanagent"
)

// marker appends "NAME N" to FILE, N being how many root spans of the shim
// HOSTFILE (a host relay's JSONL) holds: marker FILE NAME HOSTFILE.
func marker(args []string) int {
	f, err := os.OpenFile(args[0], os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return 1
	}
	defer f.Close()
	host, _ := os.ReadFile(args[2])
	fmt.Fprintln(f, args[1], strings.Count(string(host), `"operation":"kata-agent"`))
	return 0
}

// testHelpers are the helper programs the test binary is when called by
// these names (symlinks made by bin).
var testHelpers = map[string]func(args []string) int{
	"katatrace-test-agent":  spanagent.Main,
	"katatrace-test-marker": marker,
}
