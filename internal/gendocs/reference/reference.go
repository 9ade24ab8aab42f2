// Package reference generates kanade's committed reference from a command
// tree: the completion scripts (completions/), the CLI reference in Markdown
// (docs/cli/) and the man pages (docs/man/), and compares or syncs a
// generated tree with the committed one. internal/gendocs runs it and
// cmd/generated_test.go checks with it that the committed files are current.
//
// It is a package of its own so that cobra/doc (and md2man, blackfriday)
// are linked only into the generator and the tests, not into the kanade
// binary, where their package state would be initialised and kept in every
// `kanade agent` process (issue 11).
package reference

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

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// Dirs are the directories Generate owns entirely, relative to the
// repository root: every file in them is generated, and a file the
// generator no longer writes is stale.
var Dirs = []string{"completions", "docs/cli", "docs/man"}

// Shells maps each shell `kanade completion` knows to the file its script
// is committed as in completions/.
var Shells = []struct{ Shell, File string }{
	{"bash", "kanade.bash"},
	{"zsh", "kanade.zsh"},
	{"fish", "kanade.fish"},
	{"powershell", "kanade.ps1"},
}

// manDate is the date printed in man page headers. It is fixed, not the
// build time, so regenerating an unchanged tree gives identical files.
var manDate = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)

// CompletionFunc writes root's completion script for shell, as
// `kanade completion SHELL` prints it (cmd.GenerateCompletion).
type CompletionFunc func(root *cobra.Command, shell string, w io.Writer) error

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

// Generate writes the completion scripts (completions/), the CLI reference
// in Markdown (docs/cli/) and the man pages (docs/man/) of root under dir,
// creating the directories. The output depends only on the command tree.
// root should be wired to buffers, not the terminal (cmd.NewReferenceRoot);
// Generate changes its help texts for Markdown after writing the
// completions, so build a fresh tree for every call.
func Generate(root *cobra.Command, completion CompletionFunc, dir string) error {
	for _, d := range Dirs {
		if err := os.MkdirAll(filepath.Join(dir, filepath.FromSlash(d)), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	for _, s := range Shells {
		var buf bytes.Buffer
		if err := completion(root, s.Shell, &buf); err != nil {
			return fmt.Errorf("generate %s completion: %w", s.Shell, err)
		}
		if err := os.WriteFile(filepath.Join(dir, "completions", s.File), buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write %s completion: %w", s.Shell, err)
		}
	}
	root.DisableAutoGenTag = true
	fenceLong(root)
	if err := doc.GenMarkdownTree(root, filepath.Join(dir, "docs", "cli")); err != nil {
		return fmt.Errorf("generate the markdown reference: %w", err)
	}
	header := &doc.GenManHeader{
		Title:   "KANADE",
		Section: "1",
		Source:  "kanade",
		Manual:  "kanade manual",
		Date:    &manDate,
	}
	if err := doc.GenManTree(root, header, filepath.Join(dir, "docs", "man")); err != nil {
		return fmt.Errorf("generate the man pages: %w", err)
	}
	return nil
}

// Diff is how a committed reference differs from a fresh one. Paths
// are slash-separated and relative to the repository root.
type Diff struct {
	// Changed files exist in both with different content.
	Changed []string
	// Missing files are generated but not committed.
	Missing []string
	// Extra files are committed in a Dirs directory but no longer generated.
	Extra []string
}

// Empty reports whether the two trees are identical.
func (d Diff) Empty() bool {
	return len(d.Changed) == 0 && len(d.Missing) == 0 && len(d.Extra) == 0
}

// Files lists every differing path, sorted.
func (d Diff) Files() []string {
	all := slices.Concat(d.Changed, d.Missing, d.Extra)
	slices.Sort(all)
	return all
}

func (d Diff) String() string {
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

// Compare compares the Dirs of generated (a fresh Generate output) with
// those of committed (the repository root).
func Compare(generated, committed string) (Diff, error) {
	var d Diff
	gen, err := Files(generated)
	if err != nil {
		return d, err
	}
	have, err := Files(committed)
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

// Sync makes the Dirs of dst equal to those of src: it writes changed and
// missing files and removes extra ones. It returns what differed before the
// sync.
func Sync(src, dst string) (Diff, error) {
	d, err := Compare(src, dst)
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

// Files reads every file in root's Dirs, keyed by its slash-separated path
// relative to root. A missing directory is empty.
func Files(root string) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, d := range Dirs {
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
