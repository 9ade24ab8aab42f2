//go:build !windows

package winagent

import (
	"fmt"
	"os"
	"syscall"
)

// Off Windows there is no registry: the keyring and the switch are
// root-only files under /etc/kanade (or the paths the agent config names).

func defaultCommandKeysFile() string   { return DefaultCommandKeysFile }
func defaultRequireSignedFile() string { return DefaultRequireSignedFile }

func registryLocation(string) string { return "" }

func readRegistryString(string) (string, bool, error) { return "", false, nil }

// fileTrusted refuses a file another account could rewrite: it must be owned
// by root (or by the account the agent runs as, which could rewrite it
// anyway) and not be writable by group or others. The mode alone is not
// enough: a 0600 file owned by someone else is theirs to rewrite.
func fileTrusted(path string, fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: cannot read its owner", path)
	}
	if uid := int(st.Uid); uid != 0 && uid != os.Geteuid() {
		return fmt.Errorf("%s is owned by uid %d, not root: chown root %s", path, uid, path)
	}
	if m := fi.Mode().Perm(); m&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (mode %04o): chmod go-w %s", path, m, path)
	}
	return nil
}
