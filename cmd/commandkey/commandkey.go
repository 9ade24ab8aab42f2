// Package commandkey is `kanade command-key`: minting the Ed25519 keys that
// sign commands and releases (SPEC-2 §5), one file per verb. Agents hold
// only the public halves, in a keyring provisioned locally
// (docs/security.md); the private key stays with whoever signs.
package commandkey

import (
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/signing"
)

// NewCommandKeyCmd is `kanade command-key`.
func NewCommandKeyCmd(f *cmdutil.Factory) *cobra.Command {
	c := &cobra.Command{
		Use:   "command-key",
		Short: "Generate the keys that sign commands and agent releases",
		Long: `Commands and agent releases can be signed with Ed25519 keys. Agents hold the
public halves in a keyring (registry value HKLM\SOFTWARE\kanade\agent
CommandKeys on Windows, /etc/kanade/command-keys.json elsewhere); an agent
asked to enforce (RequireSignedCommands / /etc/kanade/require-signed-commands)
refuses unsigned or unverified commands with exit 123 and installs no
unsigned release.

  generate      the everyday key: writes the private key to a 0600 file
  break-glass   an emergency key whose signatures are only valid briefly

When a key is configured (KANADE_COMMAND_SIGNING_KEY and
KANADE_COMMAND_SIGNING_KID, or command-signing-key-file in the CLI config),
run, exec, the scheduler and agent publish sign everything they publish.
See docs/security.md for distributing the ring, enforcing and rotating.`,
		Args: cobra.NoArgs,
	}
	c.AddCommand(
		NewGenerateCmd(f, nil),
		NewBreakGlassCmd(f, nil),
	)
	return c
}

// Result is `command-key generate --json` and `break-glass --json`.
type Result struct {
	KID         string `json:"kid"`
	PublicKey   string `json:"public_key"`
	Fingerprint string `json:"fingerprint"`
	Label       string `json:"label"`
	// MaxAgeSecs is set for a break-glass key.
	MaxAgeSecs *uint64 `json:"max_age_secs,omitempty"`
	// KeyFile is where the private key was written ("" when printed).
	KeyFile string `json:"key_file,omitempty"`
	// PrivateKey is set only when the key was not written to a file.
	PrivateKey string `json:"private_key,omitempty"`
	// Entry is the keyring entry to distribute to agents.
	Entry signing.KeyringEntry `json:"entry"`
}

// maxKIDLen bounds a key id: it travels in every signed message's headers.
const maxKIDLen = 128

// resolveKID is kid trimmed, or prefix-<UTC minute> when it is empty:
// stamped to the minute so a second key minted the same day gets another
// id (two keys must never share one).
func resolveKID(kid, prefix string, now time.Time) (string, error) {
	kid = strings.TrimSpace(kid)
	if kid == "" {
		kid = prefix + "-" + now.UTC().Format("20060102-1504")
	}
	if len(kid) > maxKIDLen {
		return "", cmdutil.UsageErrorf("invalid --kid %q: longer than %d characters", kid, maxKIDLen)
	}
	for _, r := range kid {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r > unicode.MaxASCII {
			return "", cmdutil.UsageErrorf("invalid --kid %q: use letters, digits and punctuation, no spaces (it travels in a message header)", kid)
		}
	}
	return kid, nil
}

// mint makes a new key under kid and its result.
func mint(kid, label string, maxAge time.Duration) (*signing.Signer, string, Result, error) {
	priv, err := signing.GenerateKey()
	if err != nil {
		return nil, "", Result{}, err
	}
	s, err := signing.NewSignerFromKey(priv, kid)
	if err != nil {
		return nil, "", Result{}, err
	}
	entry := signing.NewKeyringEntry(kid, s.Public(), label, maxAge)
	return s, signing.EncodeSecret(priv), Result{
		KID: kid, PublicKey: entry.PublicKey, Fingerprint: signing.Fingerprint(s.Public()),
		Label: label, MaxAgeSecs: entry.MaxAgeSecs, Entry: entry,
	}, nil
}

// writeKeyFile stores the private key of r at path (0600, never over an
// existing file).
func writeKeyFile(path, secret string, r Result, now time.Time) error {
	return cmdutil.WriteKeyFile(path, cmdutil.KeyFile{
		KID: r.KID, Key: secret, PublicKey: r.PublicKey, Fingerprint: r.Fingerprint,
		Label: r.Label, MaxAgeSecs: r.MaxAgeSecs, CreatedAt: now.UTC(),
	})
}

// entryLine is the keyring entry as one JSON line.
func entryLine(e signing.KeyringEntry) string {
	var b strings.Builder
	_ = cmdutil.WriteJSONLine(&b, e)
	return strings.TrimRight(b.String(), "\n")
}

func printKV(w interface{ Write([]byte) (int, error) }, rows [][2]string) {
	for _, r := range rows {
		fmt.Fprintf(w, "%-13s %s\n", r[0]+":", r[1])
	}
}
