// Command katatrace carries Kata Containers agent traces from a VM guest to
// Jaeger on the host. The name it is called by picks its role; see
// docs/design.md and docs/guide.md.
package main

import (
	"os"

	// Go runs the inits of ready packages in import-path order, so this one
	// (which needs only syscall) runs before gRPC's and protobuf's: see its doc.
	_ "github.com/katatrace/katatrace/internal/lowmem"
	"github.com/katatrace/katatrace/roles"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(roles.Main(os.Args, roles.Options{Version: version}))
}
