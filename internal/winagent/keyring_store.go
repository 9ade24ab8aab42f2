package winagent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Where the keyring and the enforcement switch are provisioned (SPEC-2 §5),
// upstream's names. These are local configuration, not wire names: the
// registry on Windows, root-only files elsewhere.
const (
	keyringRegistryValue = "CommandKeys"
	enforceRegistryValue = "RequireSignedCommands"
	// DefaultCommandKeysFile and DefaultRequireSignedFile are read off
	// Windows when the agent config names no other path.
	DefaultCommandKeysFile   = "/etc/kanade/command-keys.json"
	DefaultRequireSignedFile = "/etc/kanade/require-signed-commands"
)

// localKeyringStore reads the keyring from the registry (Windows) and then
// a file: a registry that holds a value wins; one that fails to read is an
// error and does not fall through to the file (that would swap in a
// possibly older ring on a transient failure); only an absent value defers
// to the file.
type localKeyringStore struct {
	// keysFile and enforceFile are "" when there is no file store (Windows,
	// unless the agent config names one).
	keysFile, enforceFile string
}

// newLocalKeyringStore is the store of cfg: the platform default files,
// or the ones agent.command_keys_file / agent.require_signed_commands_file
// name.
func newLocalKeyringStore(cfg Config) localKeyringStore {
	s := localKeyringStore{keysFile: cfg.CommandKeysFile, enforceFile: cfg.RequireSignedFile}
	if s.keysFile == "" {
		s.keysFile = defaultCommandKeysFile()
	}
	if s.enforceFile == "" {
		s.enforceFile = defaultRequireSignedFile()
	}
	return s
}

var _ keyringStore = localKeyringStore{}

func (s localKeyringStore) location() string {
	reg := registryLocation(keyringRegistryValue)
	switch {
	case reg != "" && s.keysFile != "":
		return reg + " (or " + s.keysFile + ")"
	case reg != "":
		return reg
	}
	return s.keysFile
}

func (s localKeyringStore) load() ([]byte, bool, error) {
	v, ok, err := readRegistryString(keyringRegistryValue)
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", registryLocation(keyringRegistryValue), err)
	}
	if ok {
		return []byte(v), true, nil
	}
	if s.keysFile == "" {
		return nil, false, nil
	}
	return readTrustedFile(s.keysFile)
}

// enforceRequested reads RequireSignedCommands (1, true or yes), else the
// enforcement file. A file that exists but is not root-only counts as a
// request to enforce: whoever could write it could otherwise turn
// enforcement off (the worst it costs is refusals on an agent whose ring is
// non-empty, which only root can undo).
func (s localKeyringStore) enforceRequested() bool {
	v, ok, err := readRegistryString(enforceRegistryValue)
	if err == nil && ok {
		return truthy(v)
	}
	if s.enforceFile == "" {
		return false
	}
	raw, present, err := readTrustedFile(s.enforceFile)
	if errors.Is(err, errUntrustedFile) {
		return true
	}
	return err == nil && present && truthy(string(raw))
}

func truthy(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "true", "yes":
		return true
	}
	return false
}

// errUntrustedFile marks a local-config file another account could rewrite.
var errUntrustedFile = errors.New("not trusted")

// readTrustedFile reads a small local-config file: absent is (nil, false,
// nil); one that is not owned by root (or the account the agent runs as) or
// is writable by group or others is errUntrustedFile; an empty one is an
// error (write [] to revoke every key deliberately).
func readTrustedFile(path string) ([]byte, bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	if !fi.Mode().IsRegular() {
		return nil, false, fmt.Errorf("%s is not a regular file", path)
	}
	if err := fileTrusted(path, fi); err != nil {
		return nil, false, fmt.Errorf("%w: %w", errUntrustedFile, err)
	}
	raw, err := io.ReadAll(io.LimitReader(f, keyringReadLimit+1))
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", path, err)
	}
	if len(raw) > keyringReadLimit {
		return nil, false, fmt.Errorf("%s is larger than %d bytes", path, keyringReadLimit)
	}
	if strings.TrimSpace(string(raw)) == "" {
		return nil, false, fmt.Errorf("%s is empty: write [] to trust no key deliberately, or remove the file", path)
	}
	return raw, true, nil
}
