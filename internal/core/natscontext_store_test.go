package core

import (
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// natsCLIContext is the file `nats context add x --server nats://h:4222
// --user a --password b --description d` writes (nats CLI 0.5.1): the
// layout SaveNATSContextFile must reproduce byte for byte.
const natsCLIContext = `{
  "description": "d",
  "url": "nats://h:4222",
  "socks_proxy": "",
  "token": "",
  "user": "a",
  "password": "b",
  "creds": "",
  "nkey": "",
  "cert": "",
  "key": "",
  "ca": "",
  "nsc": "",
  "jetstream_domain": "",
  "jetstream_api_prefix": "",
  "jetstream_event_prefix": "",
  "inbox_prefix": "",
  "user_jwt": "",
  "user_seed": "",
  "color_scheme": "",
  "tls_first": false,
  "windows_cert_store": "",
  "windows_cert_match_by": "",
  "windows_cert_match": "",
  "windows_ca_certs_match": null
}`

func TestNATSContextStoreLocation(t *testing.T) {
	dir, _ := contextDir(t)
	p, err := NATSContextPath("prod")
	if err != nil || p != filepath.Join(dir, "nats", "context", "prod.json") {
		t.Fatalf("with XDG_CONFIG_HOME: %q, %v", p, err)
	}
	// Without it: .config/nats in the account's home directory, as the
	// nats CLI finds it (os/user, not $HOME).
	t.Setenv("XDG_CONFIG_HOME", "")
	u, err := user.Current()
	if err != nil {
		t.Skipf("no current user to find a home directory for: %v", err)
	}
	p, err = NATSContextPath("prod")
	if err != nil || p != filepath.Join(u.HomeDir, ".config", "nats", "context", "prod.json") {
		t.Fatalf("without XDG_CONFIG_HOME: %q, %v", p, err)
	}
}

func TestNATSContextNames(t *testing.T) {
	contextDir(t)
	for _, name := range []string{"prod", "my-context", "ctx_1", "a", "ngs.js", "with space"} {
		if err := ValidNATSContextName(name); err != nil {
			t.Errorf("%q refused: %v", name, err)
		}
	}
	for _, name := range []string{"", "foo/bar", `foo\bar`, "../evil", `..\evil`, "foo..bar", ".."} {
		err := ValidNATSContextName(name)
		if err == nil || !strings.Contains(err.Error(), "invalid context name") {
			t.Errorf("%q accepted: %v", name, err)
		}
		if _, err := NATSContextPath(name); err == nil {
			t.Errorf("NATSContextPath(%q) has no error", name)
		}
		// Reading one is a context that does not exist, listing the
		// known ones, rather than a path outside the store.
		_, err = LoadNATSContext(name)
		if name != "" && !errors.Is(err, ErrNoSuchContext) {
			t.Errorf("LoadNATSContext(%q) = %v, want ErrNoSuchContext", name, err)
		}
	}
}

// TestKnownNATSContexts: what `nats context ls` lists, and nothing else.
func TestKnownNATSContexts(t *testing.T) {
	dir, write := contextDir(t)
	if k := knownNATSContexts(); len(k) != 0 {
		t.Fatalf("no store yet: %v", k)
	}
	write("b", `{}`, false)
	write("a", `{"url":"nats://a:4222"}`, false)
	write("empty", ``, false)
	cdir := filepath.Join(dir, "nats", "context")
	for _, p := range []string{"notes.txt", "x.json.bak"} {
		if err := os.WriteFile(filepath.Join(cdir, p), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(cdir, "dir.json"), 0o700); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(knownNATSContexts(), ","); got != "a,b" {
		t.Fatalf("known = %q, want a,b", got)
	}
	// An empty file is not listed, but it is there: loading it says why
	// it cannot be used.
	_, err := LoadNATSContext("empty")
	if err == nil || errors.Is(err, ErrNoSuchContext) || !strings.Contains(err.Error(), "empty.json") {
		t.Fatalf("empty context file = %v", err)
	}
}

func TestSelectedNATSContext(t *testing.T) {
	dir, write := contextDir(t)
	write("prod", `{"url":"nats://p:4222"}`, false)
	// The nats CLI writes the name without a newline; an editor adds one.
	if err := os.WriteFile(filepath.Join(dir, "nats", "context.txt"), []byte("prod\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadNATSContext("")
	if err != nil || c.Name != "prod" || !c.Selected || c.URL != "nats://p:4222" {
		t.Fatalf("selected = %+v, %v", c, err)
	}

	// The selected context was removed: an error naming it and the ones
	// that exist (the CLI warns and carries on).
	if err := os.WriteFile(filepath.Join(dir, "nats", "context.txt"), []byte("gone"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = LoadNATSContext("")
	var ce *NATSContextError
	if c != nil || !errors.Is(err, ErrNoSuchContext) || !errors.As(err, &ce) || ce.Name != "gone" || strings.Join(ce.Known, ",") != "prod" {
		t.Fatalf("selected but missing = %+v, %v", c, err)
	}
	if want := `load nats context "gone": no such nats context`; err.Error() != want {
		t.Fatalf("error = %q, want %q", err, want)
	}

	// A blank context.txt selects nothing.
	if err := os.WriteFile(filepath.Join(dir, "nats", "context.txt"), []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := LoadNATSContext(""); c != nil || err != nil {
		t.Fatalf("blank selection = %+v, %v", c, err)
	}
}

func TestNATSContextBadJSON(t *testing.T) {
	dir, write := contextDir(t)
	write("broken", `{"url": "nats://x:4222",`, true)
	_, err := LoadNATSContext("")
	path := filepath.Join(dir, "nats", "context", "broken.json")
	var ce *NATSContextError
	if !errors.As(err, &ce) || errors.Is(err, ErrNoSuchContext) || !strings.Contains(err.Error(), "parse "+path) {
		t.Fatalf("bad JSON = %v", err)
	}
	write("wrongtype", `{"url": 4222}`, false)
	if _, err := LoadNATSContext("wrongtype"); err == nil || !strings.Contains(err.Error(), "wrongtype.json") {
		t.Fatalf("a number for url = %v", err)
	}
}

// TestNATSContextPathExpansion: file settings expand $VAR and a leading ~
// into the account's home directory, as the nats CLI does; the URL and
// secrets are left as written.
func TestNATSContextPathExpansion(t *testing.T) {
	_, write := contextDir(t)
	u, err := user.Current()
	if err != nil {
		t.Skipf("no current user: %v", err)
	}
	t.Setenv("KANADE_TEST_PKI", "/srv/pki")
	write("paths", `{"url":"nats://$KANADE_TEST_PKI:4222","creds":"~/x.creds","ca":"$KANADE_TEST_PKI/ca.pem",
		"cert":"/~/c.pem","key":"${KANADE_TEST_PKI}/k.pem","password":"~secret","user":"u"}`, false)
	f, _, err := ReadNATSContextFile("paths")
	if err != nil {
		t.Fatal(err)
	}
	// Only the ~ is replaced, so the separator after it stays as written.
	want := NATSContextFile{URL: "nats://$KANADE_TEST_PKI:4222", User: "u", Password: "~secret",
		Creds: u.HomeDir + "/x.creds", CA: "/srv/pki/ca.pem", Cert: "/~/c.pem", Key: "/srv/pki/k.pem"}
	if f.URL != want.URL || f.User != want.User || f.Password != want.Password || f.Creds != want.Creds ||
		f.CA != want.CA || f.Cert != want.Cert || f.Key != want.Key {
		t.Fatalf("read  %+v\nwant %+v", *f, want)
	}

	write("nkeyhome", `{"nkey":"~/seed.nk"}`, false)
	c, err := LoadNATSContext("nkeyhome")
	if err != nil || c.NKey != u.HomeDir+"/seed.nk" {
		t.Fatalf("nkey = %+v, %v", c, err)
	}
}

// TestNATSContextUnsupportedSettings: a context that needs what only the
// nats CLI does is refused, naming the setting, instead of being used
// without it.
func TestNATSContextUnsupportedSettings(t *testing.T) {
	_, write := contextDir(t)
	for name, body := range map[string]string{
		"socks_proxy":            `{"url":"nats://x:4222","socks_proxy":"socks5://proxy:1080"}`,
		"windows_cert_store":     `{"windows_cert_store":"machine","windows_cert_match_by":"subject","windows_cert_match":"kanade"}`,
		"windows_ca_certs_match": `{"windows_ca_certs_match":["My CA"]}`,
		"nsc":                    `{"nsc":"nsc://op/acct/user"}`,
	} {
		write("ctx-"+strings.ReplaceAll(name, "_", "-"), body, false)
		_, err := LoadNATSContext("ctx-" + strings.ReplaceAll(name, "_", "-"))
		if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "kanade does not support") {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Empty settings are no settings.
	write("nulls", `{"url":"nats://x:4222","windows_ca_certs_match":null,"socks_proxy":""}`, false)
	if c, err := LoadNATSContext("nulls"); err != nil || c.URL != "nats://x:4222" {
		t.Fatalf("empty unsupported settings = %+v, %v", c, err)
	}

	// Newer nats CLIs store nsc lookups as nsc:// creds: not a file.
	write("nsccreds", `{"creds":"nsc://op/acct/user"}`, false)
	if _, err := LoadNATSContext("nsccreds"); err == nil || !strings.Contains(err.Error(), "must be file paths") {
		t.Fatalf("nsc:// creds = %v", err)
	}
}

// TestNATSContextSecretReferences: env:// and file:// user, password and
// token are resolved; the schemes needing an outside tool are refused.
func TestNATSContextSecretReferences(t *testing.T) {
	dir, write := contextDir(t)
	tokenFile := filepath.Join(dir, "token.txt")
	if err := os.WriteFile(tokenFile, []byte("tok-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	write("filetoken", `{"token":"file://`+filepath.ToSlash(tokenFile)+`"}`, false)
	c, err := LoadNATSContext("filetoken")
	if err != nil {
		t.Fatal(err)
	}
	if o := applyOptions(t, c.AuthOptions); c.Token != "" || o.Token != "tok-from-file" {
		t.Fatalf("file:// token: field %q, option %q", c.Token, o.Token)
	}

	write("op", `{"user":"u","password":"op://vault/item/password"}`, false)
	if _, err := LoadNATSContext("op"); err == nil || !strings.Contains(err.Error(), "op:// references are not supported") {
		t.Fatalf("op:// password = %v", err)
	}
	write("unset", `{"user":"u","password":"env://KANADE_TEST_UNSET_PW"}`, false)
	os.Unsetenv("KANADE_TEST_UNSET_PW")
	if _, err := LoadNATSContext("unset"); err == nil || !strings.Contains(err.Error(), "KANADE_TEST_UNSET_PW is not set") {
		t.Fatalf("unset env:// = %v", err)
	}
	// A missing nkey seed behind a reference fails when loading, naming
	// the file, as nats.go would when connecting.
	t.Setenv("KANADE_TEST_TOKEN", "t")
	write("nkeyref", `{"nkey":"`+filepath.ToSlash(filepath.Join(dir, "missing.nk"))+`","token":"env://KANADE_TEST_TOKEN"}`, false)
	if _, err := LoadNATSContext("nkeyref"); err == nil || !strings.Contains(err.Error(), "missing.nk") {
		t.Fatalf("missing nkey = %v", err)
	}
}

// TestNATSContextUserJWT: a user JWT and seed authenticate as
// nats.UserJWTAndSeed: the JWT is sent and the nonce signed with the seed.
func TestNATSContextUserJWT(t *testing.T) {
	_, write := contextDir(t)
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	write("jwt", `{"url":"nats://x:4222","user_jwt":"eyJ.fake.jwt","user_seed":"`+string(seed)+`"}`, false)
	c, err := LoadNATSContext("jwt")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.AuthOptions) != 1 || !c.HasAuth() || c.Creds != "" {
		t.Fatalf("jwt = %+v", c)
	}
	o := applyOptions(t, c.AuthOptions)
	if o.UserJWT == nil || o.SignatureCB == nil {
		t.Fatal("no user JWT callbacks")
	}
	if jwt, err := o.UserJWT(); err != nil || jwt != "eyJ.fake.jwt" {
		t.Fatalf("jwt = %q, %v", jwt, err)
	}
	sig, err := o.SignatureCB([]byte("nonce"))
	if err != nil {
		t.Fatal(err)
	}
	verify, _ := nkeys.FromPublicKey(pub)
	if err := verify.Verify([]byte("nonce"), sig); err != nil {
		t.Fatalf("nonce not signed with the context's seed: %v", err)
	}
}

func applyOptions(t *testing.T, opts []nats.Option) nats.Options {
	t.Helper()
	var o nats.Options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

func TestSaveNATSContextFile(t *testing.T) {
	dir, _ := contextDir(t)
	path, err := SaveNATSContextFile("x", NATSContextFile{URL: "nats://h:4222", User: "a", Password: "b", Description: "d"})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "nats", "context", "x.json"); path != want {
		t.Fatalf("path %q, want %q", path, want)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != natsCLIContext {
		t.Fatalf("wrote (%v):\n%s\nwant what the nats CLI writes:\n%s", err, b, natsCLIContext)
	}
	if runtime.GOOS != "windows" {
		for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
			if st, err := os.Stat(p); err != nil || st.Mode().Perm() != want {
				t.Errorf("%s: %v, %v; want mode %o", p, st, err, want)
			}
		}
		// Replacing a file that was readable by others leaves one that is not.
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// No URL: the nats CLI's default, as `nats context add` would save.
	if _, err := SaveNATSContextFile("x", NATSContextFile{Token: "t"}); err != nil {
		t.Fatal(err)
	}
	f, _, err := ReadNATSContextFile("x")
	if err != nil || f.URL != nats.DefaultURL || f.Token != "t" || f.User != "" {
		t.Fatalf("rewritten = %+v, %v", f, err)
	}
	if st, err := os.Stat(path); runtime.GOOS != "windows" && (err != nil || st.Mode().Perm() != 0o600) {
		t.Errorf("replaced file: %v, %v; want mode 0600", st, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("the context directory holds %d entries, want x.json alone (a temporary file left?)", len(entries))
	}

	if _, err := SaveNATSContextFile("y", NATSContextFile{User: "a", Creds: "/x.creds"}); err == nil ||
		!strings.Contains(err.Error(), "too many types of credentials") {
		t.Fatalf("user and creds = %v", err)
	}
	if _, err := SaveNATSContextFile("../y", NATSContextFile{}); err == nil || !strings.Contains(err.Error(), "invalid context name") {
		t.Fatalf("bad name = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "nats", "context", "y.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused context was written: %v", err)
	}
}
