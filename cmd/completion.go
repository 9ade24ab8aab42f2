package cmd

import (
	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/spf13/cobra"
)

// NewCompletionCmd writes a shell completion script.
func NewCompletionCmd(f *cmdutil.Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Generate a shell completion script",
		Long: `Generate a completion script for your shell.

  bash:        source <(kanade completion bash)
  zsh:         kanade completion zsh > "${fpath[1]}/_kanade"
  fish:        kanade completion fish > ~/.config/fish/completions/kanade.fish
  powershell:  kanade completion powershell | Out-String | Invoke-Expression`,
		Args:              cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		ValidArgs:         []string{"bash", "zsh", "fish", "powershell"},
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(c *cobra.Command, args []string) error {
			return writeCompletion(c.Root(), args[0], f.IO.Out)
		},
	}
}
