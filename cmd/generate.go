package cmd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// Generated reference files (completions, CLI Markdown, man pages) are
// committed so they ship in release archives and read on GitHub; a test in
// generated_test.go fails when they no longer match the command tree.

// ReferenceDirs are the directories GenerateReference owns entirely, relative
// to the repository root: every file in them is generated, and a file the
// generator no longer writes is stale.
var ReferenceDirs = []string{"completions", "docs/cli", "docs/man"}

// referenceShells maps each shell `kanade completion` knows to the file its
// script is committed as.
var referenceShells = []struct{ shell, file string }{
	{"bash", "kanade.bash"},
	{"zsh", "kanade.zsh"},
	{"fish", "kanade.fish"},
	{"powershell", "kanade.ps1"},
}

// referenceDate is the date printed in man page headers. It is fixed, not the
// build time, so regenerating an unchanged tree gives identical files.
var referenceDate = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)

// GenerateCompletion writes root's completion script for shell (bash, zsh,
// fish or powershell): the same script `kanade completion SHELL` prints.
func GenerateCompletion(root *cobra.Command, shell string, w io.Writer) error {
	return writeCompletion(root, shell, w)
}

// newReferenceRoot builds the command tree as a user sees it, wired to
// buffers so nothing generated depends on the terminal or the environment.
func newReferenceRoot() *cobra.Command {
	var discard bytes.Buffer
	root := NewRootCmd(&cmdutil.Factory{IO: cmdutil.TestIO(&bytes.Buffer{}, &discard, &discard, false)})
	root.DisableAutoGenTag = true
	fenceLong(root)
	return root
}

// fenceLong wraps every command's Long text in a code fence. The help texts
// are written for a terminal (aligned columns, <placeholders>, two-space
// indents); as Markdown they would lose their line breaks and GitHub and
// md2man would swallow <EXEC_ID> as an HTML tag. Fenced, the reference reads
// exactly like --help.
func fenceLong(c *cobra.Command) {
	if long := strings.TrimRight(c.Long, "\n"); long != "" {
		c.Long = "```\n" + long + "\n```"
	}
	for _, sub := range c.Commands() {
		fenceLong(sub)
	}
}

// GenerateReference writes the completion scripts (completions/), the CLI
// reference in Markdown (docs/cli/) and the man pages (docs/man/) under dir,
// creating the directories. The output depends only on the command tree.
func GenerateReference(dir string) error {
	root := newReferenceRoot()
	for _, d := range ReferenceDirs {
		if err := os.MkdirAll(filepath.Join(dir, filepath.FromSlash(d)), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	for _, s := range referenceShells {
		var buf bytes.Buffer
		if err := GenerateCompletion(root, s.shell, &buf); err != nil {
			return fmt.Errorf("generate %s completion: %w", s.shell, err)
		}
		if err := os.WriteFile(filepath.Join(dir, "completions", s.file), buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write %s completion: %w", s.shell, err)
		}
	}
	if err := doc.GenMarkdownTree(root, filepath.Join(dir, "docs", "cli")); err != nil {
		return fmt.Errorf("generate the markdown reference: %w", err)
	}
	header := &doc.GenManHeader{
		Title:   "KANADE",
		Section: "1",
		Source:  "kanade",
		Manual:  "kanade manual",
		Date:    &referenceDate,
	}
	if err := doc.GenManTree(root, header, filepath.Join(dir, "docs", "man")); err != nil {
		return fmt.Errorf("generate the man pages: %w", err)
	}
	return nil
}

// ReferenceDiff is how a committed reference differs from a fresh one. Paths
// are slash-separated and relative to the repository root.
type ReferenceDiff struct {
	// Changed files exist in both with different content.
	Changed []string
	// Missing files are generated but not committed.
	Missing []string
	// Extra files are committed in a ReferenceDirs directory but no longer generated.
	Extra []string
}

// Empty reports whether the two trees are identical.
func (d ReferenceDiff) Empty() bool {
	return len(d.Changed) == 0 && len(d.Missing) == 0 && len(d.Extra) == 0
}

// Files lists every differing path, sorted.
func (d ReferenceDiff) Files() []string {
	all := slices.Concat(d.Changed, d.Missing, d.Extra)
	slices.Sort(all)
	return all
}

func (d ReferenceDiff) String() string {
	var b strings.Builder
	for _, part := range []struct {
		what  string
		files []string
	}{{"changed", d.Changed}, {"missing", d.Missing}, {"no longer generated", d.Extra}} {
		for _, f := range part.files {
			fmt.Fprintf(&b, "  %s (%s)\n", f, part.what)
		}
	}
	return b.String()
}

// CompareReference compares the ReferenceDirs of generated (a fresh
// GenerateReference output) with those of committed (the repository root).
func CompareReference(generated, committed string) (ReferenceDiff, error) {
	var d ReferenceDiff
	gen, err := referenceFiles(generated)
	if err != nil {
		return d, err
	}
	have, err := referenceFiles(committed)
	if err != nil {
		return d, err
	}
	for name, g := range gen {
		c, ok := have[name]
		switch {
		case !ok:
			d.Missing = append(d.Missing, name)
		case !bytes.Equal(g, c):
			d.Changed = append(d.Changed, name)
		}
	}
	for name := range have {
		if _, ok := gen[name]; !ok {
			d.Extra = append(d.Extra, name)
		}
	}
	slices.Sort(d.Changed)
	slices.Sort(d.Missing)
	slices.Sort(d.Extra)
	return d, nil
}

// SyncReference makes the ReferenceDirs of dst equal to those of src: it
// writes changed and missing files and removes extra ones. It returns what
// differed before the sync.
func SyncReference(src, dst string) (ReferenceDiff, error) {
	d, err := CompareReference(src, dst)
	if err != nil {
		return d, err
	}
	for _, name := range slices.Concat(d.Changed, d.Missing) {
		b, err := os.ReadFile(filepath.Join(src, filepath.FromSlash(name)))
		if err != nil {
			return d, err
		}
		p := filepath.Join(dst, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return d, fmt.Errorf("create %s: %w", filepath.Dir(name), err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return d, fmt.Errorf("write %s: %w", name, err)
		}
	}
	for _, name := range d.Extra {
		if err := os.Remove(filepath.Join(dst, filepath.FromSlash(name))); err != nil {
			return d, fmt.Errorf("remove stale %s: %w", name, err)
		}
	}
	return d, nil
}

// referenceFiles reads every file in root's ReferenceDirs, keyed by its
// slash-separated path relative to root. A missing directory is empty.
func referenceFiles(root string) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, d := range ReferenceDirs {
		base := filepath.Join(root, filepath.FromSlash(d))
		err := filepath.WalkDir(base, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) && p == base {
					return fs.SkipDir
				}
				return err
			}
			if e.IsDir() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			files[filepath.ToSlash(rel)] = b
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", d, err)
		}
	}
	return files, nil
}
