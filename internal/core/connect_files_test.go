package core

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// TestConnectNamesBadAuthFiles: a --creds, --nkey or TLS file that is
// missing, unreadable or of the wrong kind fails before any dial, with an
// error naming the flag, the file and what is wrong with it — not as an
// unreachable broker.
func TestConnectNamesBadAuthFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missing := filepath.Join(dir, "missing.file")
	garbage := write("garbage.txt", "this is not what you think it is\n")
	empty := write("empty.txt", "")
	creds := testCredsFile(t, dir)
	seed := testSeedFile(t, dir)
	cert, key := testCertFiles(t, dir)
	accountSeed := write("account.nk", string(mustAccountSeed(t)))

	for _, tc := range []struct {
		name string
		o    ConnectOptions
		flag string
		path string
		want string
	}{
		{"missing creds", ConnectOptions{Creds: missing}, "--creds", missing, "does not exist"},
		{"creds is a directory", ConnectOptions{Creds: dir}, "--creds", dir, "is a directory"},
		{"garbage creds", ConnectOptions{Creds: garbage}, "--creds", garbage, "not a credentials file"},
		{"empty creds", ConnectOptions{Creds: empty}, "--creds", empty, "is empty"},
		{"a seed file as creds", ConnectOptions{Creds: seed}, "--creds", seed, "not a credentials file"},
		{"missing nkey", ConnectOptions{NKey: missing}, "--nkey", missing, "does not exist"},
		{"garbage nkey", ConnectOptions{NKey: garbage}, "--nkey", garbage, "no nkey seed"},
		{"account seed as nkey", ConnectOptions{NKey: accountSeed}, "--nkey", accountSeed, "not a user nkey seed"},
		{"missing CA", ConnectOptions{TLSCA: missing}, "--tls-ca", missing, "does not exist"},
		{"garbage CA", ConnectOptions{TLSCA: garbage}, "--tls-ca", garbage, "no PEM certificate"},
		{"missing client cert", ConnectOptions{TLSCert: missing, TLSKey: key}, "--tls-cert", missing, "does not exist"},
		{"missing client key", ConnectOptions{TLSCert: cert, TLSKey: missing}, "--tls-key", missing, "does not exist"},
		{"garbage client cert", ConnectOptions{TLSCert: garbage, TLSKey: key}, "--tls-cert", garbage, "no PEM certificate"},
		{"garbage client key", ConnectOptions{TLSCert: cert, TLSKey: garbage}, "--tls-key", garbage, "no PEM private key"},
		{"key of another cert", ConnectOptions{TLSCert: cert, TLSKey: testKeyFile(t, dir)}, "--tls-key", "", "does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.URL, tc.o.Timeout = "nats://127.0.0.1:1", time.Second
			_, err := Connect(tc.o)
			if err == nil {
				t.Fatal("connected")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.flag) || !strings.Contains(msg, tc.path) || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not name %s, %s and %q", msg, tc.flag, tc.path, tc.want)
			}
			var fe *AuthFileError
			if !errors.As(err, &fe) || fe.Flag != tc.flag {
				t.Errorf("error %v is not an AuthFileError for %s", err, tc.flag)
			}
			if errors.Is(err, ErrBrokerUnreachable) {
				t.Errorf("a bad file is reported as an unreachable broker: %v", err)
			}
		})
	}

	// Good files pass the checks and fail only at the closed port.
	for name, o := range map[string]ConnectOptions{
		"creds": {Creds: creds}, "nkey": {NKey: seed},
		"tls": {TLSCA: cert, TLSCert: cert, TLSKey: key},
	} {
		o.URL, o.Timeout = "nats://127.0.0.1:1", time.Second
		if _, err := Connect(o); !errors.Is(err, ErrBrokerUnreachable) {
			t.Errorf("good %s files: %v, want broker unreachable", name, err)
		}
	}
}

func mustAccountSeed(t *testing.T) []byte {
	t.Helper()
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return seed
}

// testCredsFile writes a user .creds file signed by a fresh account.
func testCredsFile(t *testing.T, dir string) string {
	t.Helper()
	akp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	ukp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	upub, _ := ukp.PublicKey()
	useed, _ := ukp.Seed()
	uc := jwt.NewUserClaims(upub)
	token, err := uc.Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	b, err := jwt.FormatUserConfig(token, useed)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "user.creds")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func testSeedFile(t *testing.T, dir string) string {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	p := filepath.Join(dir, "user.nk")
	if err := os.WriteFile(p, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testCertFiles writes a self-signed certificate and its key as PEM.
func testCertFiles(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kanade test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// testKeyFile writes a private key that belongs to no certificate.
func testKeyFile(t *testing.T, dir string) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(k)
	p := filepath.Join(dir, "other-key.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
