package core

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// AuthFileError is a file named by --creds, --nkey, --tls-ca, --tls-cert or
// --tls-key that cannot be used: it is missing, unreadable or not the kind
// of file the flag wants. Connect finds it before dialling, so it is never
// mistaken for an unreachable broker.
type AuthFileError struct {
	// Flag names the file's flag, e.g. "--creds"; the agent's config keys
	// map to the same flags.
	Flag string
	// Path is the file as given.
	Path string
	// Kind says what the file should be, e.g. "credentials file".
	Kind string
	// Problem says what is wrong, e.g. "it does not exist".
	Problem string
	// Err is the underlying error, when there is one.
	Err error
}

func (e *AuthFileError) Error() string {
	return fmt.Sprintf("read %s %s (%s): %s", e.Kind, e.Path, e.Flag, e.Problem)
}

func (e *AuthFileError) Unwrap() error { return e.Err }

// readAuthFile reads a file named by flag and words why it cannot be read.
func readAuthFile(flag, kind, path string) ([]byte, error) {
	fail := func(problem string, err error) ([]byte, error) {
		return nil, &AuthFileError{Flag: flag, Path: path, Kind: kind, Problem: problem, Err: err}
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fail("it does not exist", err)
	case err != nil:
		return fail("it cannot be read: "+pathErrText(err), err)
	case st.IsDir():
		return fail("it is a directory, not a file", nil)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fail("it cannot be read: "+pathErrText(err), err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return fail("it is empty", nil)
	}
	return b, nil
}

// pathErrText is err without the path it repeats ("permission denied").
func pathErrText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// wipe overwrites secret file contents once they have been checked, as
// nats.go does with the files it reads.
func wipe(b []byte) {
	for i := range b {
		b[i] = 'x'
	}
}

// expandCredsPath expands a --creds path the way nats.go's UserCredentials
// does ($VARS, then a leading ~), so the check reads the file nats.go will.
func expandCredsPath(p string) string {
	p = os.ExpandEnv(p)
	if strings.HasPrefix(p, "~") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, p[1:])
		}
	}
	return p
}

// checkCredsFile makes sure path is a .creds file: a user JWT and a user
// nkey seed. The contents are never quoted: they hold the seed.
func checkCredsFile(path string) error {
	const flag, kind = "--creds", "credentials file"
	b, err := readAuthFile(flag, kind, expandCredsPath(path))
	if err != nil {
		var fe *AuthFileError
		if errors.As(err, &fe) {
			fe.Path = path
		}
		return err
	}
	defer wipe(b)
	bad := func(problem string, err error) error {
		return &AuthFileError{Flag: flag, Path: path, Kind: kind, Problem: problem, Err: err}
	}
	// ParseDecoratedJWT takes an undecorated file as one bare JWT; decoding
	// it as user claims is what tells a .creds file from anything else.
	token, err := nkeys.ParseDecoratedJWT(b)
	if err == nil {
		_, err = jwt.DecodeUserClaims(token)
	}
	if err != nil {
		return bad("it is not a credentials file: it holds no user JWT", err)
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return bad("it is not a credentials file: it holds no nkey seed", err)
	}
	defer kp.Wipe()
	if pub, err := kp.PublicKey(); err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return bad("its nkey seed is not a user seed", err)
	}
	return nil
}

// checkNKeyFile makes sure path holds a user nkey seed.
func checkNKeyFile(path string) error {
	const flag, kind = "--nkey", "nkey seed file"
	b, err := readAuthFile(flag, kind, path)
	if err != nil {
		return err
	}
	defer wipe(b)
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return &AuthFileError{Flag: flag, Path: path, Kind: kind, Problem: "it holds no nkey seed (a user seed starts with SU)", Err: err}
	}
	defer kp.Wipe()
	if pub, err := kp.PublicKey(); err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return &AuthFileError{Flag: flag, Path: path, Kind: kind, Problem: "it is not a user nkey seed (a user seed starts with SU)", Err: err}
	}
	return nil
}

// checkCAFile makes sure path holds at least one PEM certificate.
func checkCAFile(path string) error {
	const flag, kind = "--tls-ca", "CA certificate file"
	b, err := readAuthFile(flag, kind, path)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return &AuthFileError{Flag: flag, Path: path, Kind: kind, Problem: "it holds no PEM certificate"}
	}
	return nil
}

// checkClientCert makes sure cert and key are a PEM certificate and the
// private key that belongs to it.
func checkClientCert(cert, key string) error {
	certPEM, err := readAuthFile("--tls-cert", "client certificate file", cert)
	if err != nil {
		return err
	}
	if !hasPEMBlock(certPEM, func(t string) bool { return t == "CERTIFICATE" }) {
		return &AuthFileError{Flag: "--tls-cert", Path: cert, Kind: "client certificate file", Problem: "it holds no PEM certificate"}
	}
	keyPEM, err := readAuthFile("--tls-key", "client private key file", key)
	if err != nil {
		return err
	}
	defer wipe(keyPEM)
	if !hasPEMBlock(keyPEM, func(t string) bool { return strings.HasSuffix(t, "PRIVATE KEY") }) {
		return &AuthFileError{Flag: "--tls-key", Path: key, Kind: "client private key file", Problem: "it holds no PEM private key"}
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		if strings.Contains(err.Error(), "does not match") {
			return &AuthFileError{Flag: "--tls-key", Path: key, Kind: "client private key file",
				Problem: fmt.Sprintf("it does not match the certificate in %s (--tls-cert)", cert), Err: err}
		}
		return &AuthFileError{Flag: "--tls-cert", Path: cert, Kind: "client certificate file",
			Problem: fmt.Sprintf("it cannot be used with the key in %s (--tls-key): %v", key, err), Err: err}
	}
	return nil
}

func hasPEMBlock(b []byte, want func(blockType string) bool) bool {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return false
		}
		if want(blk.Type) {
			return true
		}
	}
}
