package inventory

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/windows/registry"

	"github.com/kanadehq/kanade-go/internal/core"
)

// Uninstall keys: the native view and the 32-bit applications' view on
// 64-bit Windows (absent on 32-bit Windows, which is not an error).
const (
	uninstallKey      = `SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall`
	uninstallKeyWOW64 = `SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall`
)

// platformSWSources read what "Apps & features" lists, from both registry
// views; the results are merged and de-duplicated.
func platformSWSources() []swSource {
	return []swSource{
		{name: "registry_uninstall", run: func(ctx context.Context) ([]core.SoftwareItem, error) {
			return uninstallItems(ctx, uninstallKey)
		}},
		{name: "registry_uninstall_wow64", run: func(ctx context.Context) ([]core.SoftwareItem, error) {
			return uninstallItems(ctx, uninstallKeyWOW64)
		}},
	}
}

func uninstallItems(ctx context.Context, path string) ([]core.SoftwareItem, error) {
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, path, registry.ENUMERATE_SUB_KEYS|registry.QUERY_VALUE|registry.WOW64_64KEY)
	if errors.Is(err, registry.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf(`open HKLM\%s: %w`, path, err)
	}
	defer k.Close()
	names, err := k.ReadSubKeyNames(-1)
	if err != nil {
		return nil, fmt.Errorf(`list HKLM\%s: %w`, path, err)
	}
	entries := make([]uninstallEntry, 0, len(names))
	for _, n := range names {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		sk, err := registry.OpenKey(k, n, registry.QUERY_VALUE|registry.WOW64_64KEY)
		if err != nil {
			continue // one unreadable product does not hide the others
		}
		var e uninstallEntry
		e.DisplayName, _, _ = sk.GetStringValue("DisplayName")
		e.DisplayVersion, _, _ = sk.GetStringValue("DisplayVersion")
		e.Publisher, _, _ = sk.GetStringValue("Publisher")
		e.InstallDate, _, _ = sk.GetStringValue("InstallDate")
		e.SystemComponent, _, _ = sk.GetIntegerValue("SystemComponent")
		e.ParentKeyName, _, _ = sk.GetStringValue("ParentKeyName")
		e.ReleaseType, _, _ = sk.GetStringValue("ReleaseType")
		sk.Close()
		entries = append(entries, e)
	}
	return softwareFromUninstall(entries), nil
}
