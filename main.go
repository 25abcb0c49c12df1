// Command katatrace carries Kata Containers agent traces from a VM guest to
// Jaeger on the host. The name it is called by picks its role; see
// ../shared/DESIGN.md and docs/.
package main

import (
	"os"

	// Before every other package's init: see its doc.
	_ "github.com/katatrace/katatrace/internal/lowmem"
	"github.com/katatrace/katatrace/roles"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(roles.Main(os.Args, roles.Options{Version: version}))
}
