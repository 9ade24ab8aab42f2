package cmd

import (
	"io"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/spf13/cobra"
)

// writeCompletion writes root's completion script for shell.
func writeCompletion(root *cobra.Command, shell string, w io.Writer) error {
	switch shell {
	case "bash":
		return root.GenBashCompletionV2(w, true)
	case "zsh":
		return root.GenZshCompletion(w)
	case "fish":
		return root.GenFishCompletion(w, true)
	case "powershell":
		return root.GenPowerShellCompletionWithDesc(w)
	}
	return cmdutil.UsageErrorf("unknown shell %q (want bash, zsh, fish or powershell)", shell)
}
