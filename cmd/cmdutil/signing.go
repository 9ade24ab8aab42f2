package cmdutil

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/kanadehq/kanade-go/internal/signing"
)

// The operator side of command signing (SPEC-2 §5). When a signing key is
// configured, every verb that publishes a command (run, exec, the
// scheduler: all through PublishCommand) signs it at publish time, and
// `kanade agent publish` signs the release. With none configured nothing is
// signed and no Kanade-Sig* header is sent.
//
// The key comes from, first found:
//   - KANADE_COMMAND_SIGNING_KEY (base64 of the 32-byte seed) with
//     KANADE_COMMAND_SIGNING_KID;
//   - upstream's break-glass pair KANADE_BREAK_GLASS_KEY with
//     KANADE_BREAK_GLASS_KID, so upstream's incident runbook works as written;
//   - the key file named by command-signing-key-file in the CLI config (env
//     KANADE_COMMAND_SIGNING_KEY_FILE), as `kanade command-key generate`
//     writes it.
//
// Half a pair is an error, never a silent fall back to unsigned: a command
// signed under a guessed id, or not at all, is refused fleet-wide by
// enforcing agents, which reads like a forgery alarm.

// Environment variables of the signing key.
const (
	EnvSigningKey     = "KANADE_COMMAND_SIGNING_KEY"
	EnvSigningKID     = "KANADE_COMMAND_SIGNING_KID"
	EnvBreakGlassKey  = "KANADE_BREAK_GLASS_KEY"
	EnvBreakGlassKID  = "KANADE_BREAK_GLASS_KID"
	EnvSigningKeyFile = "KANADE_COMMAND_SIGNING_KEY_FILE"
	// ConfigSigningKeyFile is the CLI config key naming a key file.
	ConfigSigningKeyFile = "command-signing-key-file"
)

// KeyFile is the JSON a signing key is kept in (mode 0600): its id and the
// secret (base64 of the 32-byte seed, upstream's CommandSigningKey form),
// with the public key and fingerprint for reference.
type KeyFile struct {
	KID         string    `json:"kid"`
	Key         string    `json:"key"`
	PublicKey   string    `json:"public_key,omitempty"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	Label       string    `json:"label,omitempty"`
	MaxAgeSecs  *uint64   `json:"max_age_secs,omitempty"`
	CreatedAt   time.Time `json:"created_at,omitzero"`
}

// WriteKeyFile writes kf to path with mode 0600, refusing to replace an
// existing file (a key overwritten by mistake cannot be recovered).
func WriteKeyFile(path string, kf KeyFile) error {
	b, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return err
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return WithHint(fmt.Errorf("write the key file %s: it exists already", path), "pick another file with --out; an existing key is never overwritten")
	}
	if err != nil {
		return fmt.Errorf("write the key file %s: %w", path, err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("write the key file %s: %w", path, err)
	}
	return nil
}

// ReadKeyFile loads a signer from a key file. Off Windows a file others
// can read is refused, as ssh refuses a private key: the secret may already
// have leaked.
func ReadKeyFile(path string) (*signing.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read the signing key file %s (%s): %w", path, ConfigSigningKeyFile, err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, WithHint(fmt.Errorf("the signing key file %s is readable by others (mode %04o)", path, fi.Mode().Perm()),
			"chmod 600 "+path+" (and consider the key exposed)")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the signing key file %s: %w", path, err)
	}
	var kf KeyFile
	if err := json.Unmarshal(b, &kf); err != nil {
		return nil, fmt.Errorf("the signing key file %s is not a key file written by `kanade command-key generate`: %w", path, err)
	}
	s, err := signing.NewSigner(kf.Key, kf.KID)
	if err != nil {
		return nil, fmt.Errorf("the signing key file %s: %w", path, err)
	}
	if kf.PublicKey != "" && kf.PublicKey != signing.EncodePublic(s.Public()) {
		return nil, fmt.Errorf("the signing key file %s: its public_key does not belong to its key", path)
	}
	return s, nil
}

// ResolveSigner finds the configured signing key: the environment pairs,
// then keyFile (the CLI config's command-signing-key-file; "" for none). It
// returns nil, nil when nothing is configured.
func ResolveSigner(getenv func(string) string, keyFile string) (*signing.Signer, error) {
	for _, pair := range [][2]string{{EnvSigningKey, EnvSigningKID}, {EnvBreakGlassKey, EnvBreakGlassKID}} {
		key, kid := strings.TrimSpace(getenv(pair[0])), strings.TrimSpace(getenv(pair[1]))
		switch {
		case key == "" && kid == "":
			continue
		case key == "":
			return nil, UsageErrorf("%s is set but %s is not: set both, or neither to publish unsigned", pair[1], pair[0])
		case kid == "":
			return nil, UsageErrorf("%s is set but %s is not: set the key id agents know the key by (the kid of its keyring entry)", pair[0], pair[1])
		}
		s, err := signing.NewSigner(key, kid)
		if err != nil {
			return nil, UsageErrorf("%s: %v", pair[0], err)
		}
		return s, nil
	}
	if keyFile = strings.TrimSpace(keyFile); keyFile != "" {
		return ReadKeyFile(keyFile)
	}
	return nil, nil
}

// SignerSource resolves the CLI's signing key once; nil signer, nil error
// means none is configured.
type SignerSource func() (*signing.Signer, error)

type signerSourceKey struct{}

// WithSignerSource makes commands run with ctx sign with src (the root
// command sets it from the CLI config).
func WithSignerSource(ctx context.Context, src SignerSource) context.Context {
	return context.WithValue(ctx, signerSourceKey{}, src)
}

// OnceSignerSource is src resolved on first use only.
func OnceSignerSource(src SignerSource) SignerSource {
	var (
		once sync.Once
		s    *signing.Signer
		err  error
	)
	return func() (*signing.Signer, error) {
		once.Do(func() { s, err = src() })
		return s, err
	}
}

// ConfigSigner is the signer source of a command run with cfg: the
// environment, then cfg's key file, resolved once when first needed.
func ConfigSigner(cfg *CLIConfig) SignerSource {
	return OnceSignerSource(func() (*signing.Signer, error) { return ResolveSigner(os.Getenv, cfg.SigningKeyFile) })
}

// CommandSigner is the signing key for commands published with ctx: the
// source the root command put there, else the environment alone (callers
// outside a command, tests). Nil when none is configured.
func CommandSigner(ctx context.Context) (*signing.Signer, error) {
	if src, ok := ctx.Value(signerSourceKey{}).(SignerSource); ok && src != nil {
		return src()
	}
	return ResolveSigner(os.Getenv, os.Getenv(EnvSigningKeyFile))
}
