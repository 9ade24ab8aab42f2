// Command kanade is the same program as the module root's main package,
// under a path whose last element is "kanade", so that
// `go install github.com/kanadehq/kanade-go/cmd/kanade@latest` installs a
// binary named kanade (Go names binaries after the package directory).
package main

import (
	"os"

	"github.com/kanadehq/kanade-go/cmd"
)

func main() { os.Exit(cmd.Main()) }
