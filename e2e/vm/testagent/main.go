// Command testagent stands in for the Kata agent inside the test VMs: a
// static binary of spanagent (see its Main for the arguments).
package main

import (
	"os"

	"github.com/katatrace/katatrace/internal/spanagent"
)

func main() { os.Exit(spanagent.Main(os.Args[1:])) }
