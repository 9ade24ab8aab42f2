package cmdutil

import (
	"fmt"
	"os"
	"path/filepath"
)

// ExportDoc is one manifest `export` writes: its YAML, the file name it
// gets in an output directory (Name + ".yaml") and how the progress line
// names it.
type ExportDoc struct {
	Name, Label string
	YAML        []byte
}

// WriteExports writes docs for `job export` and `schedule export`: one
// multi-document YAML stream on Out, or one file per manifest in outDir
// (created if needed), each reported on ErrOut. yaml is called once per
// document, in order, so a failure stops before anything later is written.
func WriteExports(io *IOStreams, outDir string, n int, yaml func(i int) (ExportDoc, error)) error {
	if outDir != "" {
		if err := os.MkdirAll(outDir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", outDir, err)
		}
	}
	for i := range n {
		d, err := yaml(i)
		if err != nil {
			return err
		}
		if outDir == "" {
			if i > 0 {
				fmt.Fprintln(io.Out, "---")
			}
			if _, err := io.Out.Write(d.YAML); err != nil {
				return err
			}
			continue
		}
		p := filepath.Join(outDir, d.Name+".yaml")
		if err := os.WriteFile(p, d.YAML, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		fmt.Fprintf(io.ErrOut, "wrote %s (%s)\n", p, d.Label)
	}
	return nil
}
