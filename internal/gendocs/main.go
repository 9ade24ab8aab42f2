// Command gendocs regenerates kanade's committed reference from the live
// command tree: completions/ (bash, zsh, fish, PowerShell), docs/cli/
// (Markdown) and docs/man/ (man pages). Run it from the repository root:
//
//	go run ./internal/gendocs
//
// or scripts/gen-docs.sh. With -check it changes nothing and exits 1 when the
// committed files are stale. cmd/generated_test.go runs the same comparison.
// The generators live in internal/gendocs/reference, out of the kanade
// binary.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kanadehq/kanade-go/cmd"
	"github.com/kanadehq/kanade-go/internal/gendocs/reference"
)

func main() {
	dir := flag.String("dir", ".", "repository root to write into")
	check := flag.Bool("check", false, "only report stale files; exit 1 if any")
	flag.Parse()
	if err := run(*dir, *check); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}

func run(dir string, check bool) error {
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return fmt.Errorf("%s is not the repository root (no go.mod): run from the root or pass -dir", dir)
	}
	tmp, err := os.MkdirTemp("", "kanade-gendocs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := reference.Generate(cmd.NewReferenceRoot(), cmd.GenerateCompletion, tmp); err != nil {
		return err
	}
	if check {
		d, err := reference.Compare(tmp, dir)
		if err != nil {
			return err
		}
		if !d.Empty() {
			return fmt.Errorf("stale generated files:\n%srun scripts/gen-docs.sh", d)
		}
		fmt.Println("generated reference is up to date")
		return nil
	}
	d, err := reference.Sync(tmp, dir)
	if err != nil {
		return err
	}
	if d.Empty() {
		fmt.Println("generated reference is up to date")
		return nil
	}
	fmt.Print(d)
	fmt.Printf("updated %d file(s) in %v\n", len(d.Files()), reference.Dirs)
	return nil
}
