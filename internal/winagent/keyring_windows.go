//go:build windows

package winagent

import (
	"errors"
	"os"
	"strconv"

	"golang.org/x/sys/windows/registry"
)

// On Windows the keyring and the switch live in the registry beside the
// broker token (HKLM\SOFTWARE\kanade\agent), whose ACL installers restrict
// to SYSTEM and administrators. There is no default file: a stray file must
// not become a second store (agent.command_keys_file may still name one).

func defaultCommandKeysFile() string   { return "" }
func defaultRequireSignedFile() string { return "" }

func registryLocation(value string) string { return `HKLM\` + tokenRegistryKey + `\` + value }

// readRegistryString reads value under HKLM\SOFTWARE\kanade\agent: a string
// (REG_SZ, REG_EXPAND_SZ, REG_MULTI_SZ joined by newlines) or a DWORD as its
// decimal form. A missing key or value is (_, false, nil).
func readRegistryString(value string) (string, bool, error) {
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, tokenRegistryKey, registry.QUERY_VALUE)
	if errors.Is(err, registry.ErrNotExist) || errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	defer k.Close()
	_, typ, err := k.GetValue(value, nil)
	if errors.Is(err, registry.ErrNotExist) || errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil && !errors.Is(err, registry.ErrShortBuffer) {
		return "", false, err
	}
	switch typ {
	case registry.DWORD, registry.QWORD:
		n, _, err := k.GetIntegerValue(value)
		if err != nil {
			return "", false, err
		}
		return strconv.FormatUint(n, 10), true, nil
	case registry.MULTI_SZ:
		lines, _, err := k.GetStringsValue(value)
		if err != nil {
			return "", false, err
		}
		out := ""
		for i, l := range lines {
			if i > 0 {
				out += "\n"
			}
			out += l
		}
		return out, true, nil
	}
	s, _, err := k.GetStringValue(value)
	if err != nil {
		return "", false, err
	}
	return s, true, nil
}

// fileTrusted: a file named by the agent config on Windows is protected by
// its ACL, which the agent does not inspect.
func fileTrusted(string, os.FileInfo) error { return nil }
