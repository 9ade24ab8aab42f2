package cmd

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// VersionInfo is `kanade version --json`.
type VersionInfo struct {
	Version string `json:"version"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
	Go      string `json:"go"`
}

// NewVersionCmd prints the build's version. Self-update smoke-tests a staged
// binary with `kanade version`, so it must work with no config and no broker.
func NewVersionCmd(f *cmdutil.Factory) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the kanade version",
		Args:  cobra.NoArgs,
		// No config, no broker: skip the root's pre-run.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(c *cobra.Command, _ []string) error {
			info := VersionInfo{Version: core.AgentVersion(), OS: runtime.GOOS, Arch: runtime.GOARCH, Go: runtime.Version()}
			if asJSON {
				return cmdutil.WriteJSON(f.IO.Out, info)
			}
			_, err := fmt.Fprintf(f.IO.Out, "kanade %s (%s/%s, %s)\n", info.Version, info.OS, info.Arch, info.Go)
			return err
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}
