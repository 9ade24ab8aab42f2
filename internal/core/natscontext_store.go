package core

// This file reads and writes the nats CLI's context store itself instead of
// through jsm.go's natscontext package. natscontext imports the whole jsm.go
// management library (the expr language, a JSON schema registry, advisory
// types, nats.go/micro), and what their init functions allocate (560 KiB
// in 8,000 objects, GODEBUG=inittrace=1) stays live, and is scanned at every
// GC, in every `kanade agent` process. Without it (and cobra/doc, see
// internal/gendocs/reference) the idle agent's RSS after five minutes went
// from 17.9 to 16.2 MiB and the binary from 41.7 to 38.9 MB (`go run ./bench
// -idle-for 150s idle`, issue 11). The store is small and stable, and
// natscontext's package documentation describes it: one JSON file per
// context and a text file naming the selected one. Where the store is,
// which names are valid, the JSON layout, path expansion and how a file is
// written follow jsm.go's natscontext v0.4.1 and v0.5.1 (nats CLI 0.5).

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
)

// NATSContextFile is one nats context as the nats CLI stores it. The JSON
// names and their order are natscontext's, so a file kanade writes is
// byte for byte the one `nats context add` would write.
type NATSContextFile struct {
	Description string `json:"description"`
	// URL is the server URL, a comma list for several. Empty means
	// nats.DefaultURL to the nats CLI.
	URL        string `json:"url"`
	SocksProxy string `json:"socks_proxy"`
	Token      string `json:"token"`
	User       string `json:"user"`
	Password   string `json:"password"`
	// Creds and NKey are files (or op:// references for Creds).
	Creds string `json:"creds"`
	NKey  string `json:"nkey"`
	// Cert, Key and CA are TLS files.
	Cert string `json:"cert"`
	Key  string `json:"key"`
	CA   string `json:"ca"`
	// NSCLookup is an nsc://operator/account/user the nats CLI resolves
	// by running nsc.
	NSCLookup     string `json:"nsc"`
	JSDomain      string `json:"jetstream_domain"`
	JSAPIPrefix   string `json:"jetstream_api_prefix"`
	JSEventPrefix string `json:"jetstream_event_prefix"`
	InboxPrefix   string `json:"inbox_prefix"`
	UserJWT       string `json:"user_jwt"`
	UserSeed      string `json:"user_seed"`
	ColorScheme   string `json:"color_scheme"`
	TLSFirst      bool   `json:"tls_first"`
	// The Windows certificate store settings select the client
	// certificate and CAs from the store instead of from files.
	WinCertStore        string   `json:"windows_cert_store"`
	WinCertStoreMatchBy string   `json:"windows_cert_match_by"`
	WinCertStoreMatch   string   `json:"windows_cert_match"`
	WinCACertsMatch     []string `json:"windows_ca_certs_match"`
}

// natsSelectedContextFile names the selected context, beside the
// context directory.
const natsSelectedContextFile = "context.txt"

// natsConfigDir is the nats CLI's configuration directory:
// $XDG_CONFIG_HOME/nats, else .config/nats in the account's home directory.
// Like natscontext it asks os/user for the home directory (not $HOME), and
// uses the same layout on every OS.
func natsConfigDir() (string, error) {
	if parent := os.Getenv("XDG_CONFIG_HOME"); parent != "" {
		return filepath.Join(parent, "nats"), nil
	}
	u, err := user.Current()
	if err != nil {
		return "", err
	}
	if u.HomeDir == "" {
		return "", errors.New("cannot determine home directory")
	}
	return filepath.Join(u.HomeDir, ".config", "nats"), nil
}

// ValidNATSContextName checks name is one the nats CLI accepts: not empty,
// no path separator and no "..".
func ValidNATSContextName(name string) error {
	if name == "" || strings.Contains(name, "..") || strings.ContainsAny(name, `/\`) {
		return fmt.Errorf("invalid context name %q", name)
	}
	return nil
}

// NATSContextPath is the file the context name is stored in.
func NATSContextPath(name string) (string, error) {
	if err := ValidNATSContextName(name); err != nil {
		return "", err
	}
	dir, err := natsConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "context", name+".json"), nil
}

// selectedNATSContext is the name `nats context select` chose, "" when none
// is (or the store cannot be found).
func selectedNATSContext() string {
	dir, err := natsConfigDir()
	if err != nil {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(dir, natsSelectedContextFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// knownNATSContexts lists the contexts `nats context ls` shows, sorted:
// the non-empty .json files of the context directory with a valid name.
func knownNATSContexts() []string {
	known := []string{}
	dir, err := natsConfigDir()
	if err != nil {
		return known
	}
	entries, err := os.ReadDir(filepath.Join(dir, "context"))
	if err != nil {
		return known
	}
	for _, e := range entries {
		if e.IsDir() || filepath.Ext(e.Name()) != ".json" {
			continue
		}
		if info, err := e.Info(); err != nil || info.Size() == 0 {
			continue
		}
		if name := strings.TrimSuffix(e.Name(), ".json"); ValidNATSContextName(name) == nil {
			known = append(known, name)
		}
	}
	slices.Sort(known)
	return known
}

// ReadNATSContextFile reads the context name and returns it with the path
// it was read from. As in natscontext, environment variables and a leading
// ~ are expanded in the file settings (creds, nkey, cert, key, ca); the URL
// is left as written, empty when the file has none. A context that does
// not exist (or a name no context can have) is ErrNoSuchContext.
func ReadNATSContextFile(name string) (*NATSContextFile, string, error) {
	if err := ValidNATSContextName(name); err != nil {
		return nil, "", fmt.Errorf("%w (%v)", ErrNoSuchContext, err)
	}
	path, err := NATSContextPath(name)
	if err != nil {
		return nil, "", err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, path, ErrNoSuchContext
	}
	if err != nil {
		return nil, path, err
	}
	var f NATSContextFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, path, fmt.Errorf("parse %s: %w", path, err)
	}
	f.Creds, f.NKey = expandHome(f.Creds), expandHome(f.NKey)
	f.Cert, f.Key, f.CA = expandHome(f.Cert), expandHome(f.Key), expandHome(f.CA)
	return &f, path, nil
}

// SaveNATSContextFile writes f as the context name, as `nats context add`
// saves one: the context directory is created (mode 0700) and the file is
// replaced atomically with one of mode 0600, so a reader never sees half a
// context. A context without a URL is given nats.DefaultURL, and one with
// more than one kind of credentials is refused. It returns the file's
// path; it does not select the context.
func SaveNATSContextFile(name string, f NATSContextFile) (string, error) {
	path, err := NATSContextPath(name)
	if err != nil {
		return "", err
	}
	kinds := 0
	for _, c := range []string{f.User, f.Creds, f.NKey, f.NSCLookup, f.UserJWT} {
		if c != "" {
			kinds++
		}
	}
	if kinds > 1 {
		return "", errors.New("too many types of credentials. Choose only one from 'user/token', 'creds', 'nkey', 'nsc'")
	}
	if f.URL == "" && f.NSCLookup == "" {
		f.URL = nats.DefaultURL
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	return path, writeFileAtomic(path, b, 0o600)
}

// writeFileAtomic writes b to path through a temporary file in the same
// directory, synced and renamed into place, as the nats CLI does.
func writeFileAtomic(path string, b []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	err = tmp.Chmod(mode)
	if err == nil {
		_, err = tmp.Write(b)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	// The directory's fsync makes the rename durable; the file is in
	// place either way, so its failure is not the write's.
	if d, derr := os.Open(filepath.Dir(path)); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// expandHome expands environment variables in a context's file setting and
// then a leading ~ into the account's home directory, as natscontext does
// (so ~other/x is not another user's home, and a ~ elsewhere stays).
func expandHome(p string) string {
	p = os.ExpandEnv(p)
	if p == "" || p[0] != '~' {
		return p
	}
	u, err := user.Current()
	if err != nil {
		return p
	}
	return strings.Replace(p, "~", u.HomeDir, 1)
}
