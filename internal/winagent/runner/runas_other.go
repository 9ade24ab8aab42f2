//go:build !windows

package runner

import (
	"fmt"
	"os"

	"github.com/kanadehq/kanade-go/internal/core"
)

// identity is who the script runs as. Off Windows it is always the agent
// itself: run_as user and system_gui are refused before one is made.
type identity struct{}

// runAsUnsupported returns the note and true when runAs asks for an identity
// this platform cannot give (SPEC §6.5: run_as is Windows-only).
func runAsUnsupported(runAs string) (string, bool) {
	if runAs == core.RunAsUser || runAs == core.RunAsSystemGUI {
		return fmt.Sprintf("run_as %q is Windows-only; the script was not run", runAs), true
	}
	return "", false
}

func newIdentity(string) (*identity, error) { return &identity{}, nil }

func (*identity) home() (string, error) { return os.UserHomeDir() }

// lookupEnv looks key up in the environment scripts get (env.go).
func (*identity) lookupEnv(key string) (string, bool) {
	if withheldFromScripts(key) {
		return "", false
	}
	return os.LookupEnv(key)
}

// scriptDir is where temp scripts go when Spec.TempDir is empty.
func (*identity) scriptDir() string { return os.TempDir() }

func (*identity) close() {}
