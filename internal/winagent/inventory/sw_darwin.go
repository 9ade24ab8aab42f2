package inventory

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/kanadehq/kanade-go/internal/core"
)

// platformSWSources list the application bundles in /Applications.
func platformSWSources() []swSource {
	return []swSource{{name: "applications", run: func(ctx context.Context) ([]core.SoftwareItem, error) {
		return macApplications(ctx, "/Applications")
	}}}
}

func macApplications(ctx context.Context, dir string) ([]core.SoftwareItem, error) {
	bundles, err := filepath.Glob(filepath.Join(dir, "*.app"))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var items []core.SoftwareItem
	for _, b := range bundles {
		if ctx.Err() != nil {
			return items, ctx.Err()
		}
		plist := filepath.Join(b, "Contents", "Info.plist")
		raw, err := os.ReadFile(plist)
		if err != nil {
			items = append(items, appFromInfoPlist(filepath.Base(b), nil))
			continue
		}
		vals, ok := plistStrings(raw)
		if !ok {
			// A binary plist: let the OS convert it.
			if out, err := exec.CommandContext(ctx, "plutil", "-convert", "xml1", "-o", "-", plist).Output(); err == nil {
				vals, _ = plistStrings(out)
			}
		}
		items = append(items, appFromInfoPlist(filepath.Base(b), vals))
	}
	return items, nil
}
