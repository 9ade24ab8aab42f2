package cmd

import (
	"bytes"
	"io"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/spf13/cobra"
)

// The generated reference files (completions, CLI Markdown, man pages) are
// committed so they ship in release archives and read on GitHub.
// internal/gendocs writes them from NewReferenceRoot with
// internal/gendocs/reference, which holds the Markdown and man generators
// (cobra/doc): kept out of this package, they are not linked into the kanade
// binary. generated_test.go fails when the files no longer match the tree.

// GenerateCompletion writes root's completion script for shell (bash, zsh,
// fish or powershell): the same script `kanade completion SHELL` prints.
func GenerateCompletion(root *cobra.Command, shell string, w io.Writer) error {
	return writeCompletion(root, shell, w)
}

// NewReferenceRoot builds the command tree as a user sees it, wired to
// buffers so nothing generated from it depends on the terminal or the
// environment.
func NewReferenceRoot() *cobra.Command {
	var discard bytes.Buffer
	return NewRootCmd(&cmdutil.Factory{IO: cmdutil.TestIO(&bytes.Buffer{}, &discard, &discard, false)})
}
