// Command kanade manages fleets of PCs over NATS JetStream: the resident agent,
// the operator verbs, JetStream setup and an embedded dev broker, in one binary.
package main

import (
	"os"

	"github.com/kanadehq/kanade-go/cmd"
)

func main() { os.Exit(cmd.Main()) }
