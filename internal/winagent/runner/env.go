package runner

import (
	"slices"
	"strings"
)

// withheldFromScripts reports whether the variable name is kept from
// scripts. Scripts get a clean environment: the agent's own environment
// minus every variable that configures the agent or may hold a credential.
// Whatever a script prints is kept in RESULTS (30 days) and shown to every operator, so
// an `env` or `Get-ChildItem env:` must not publish the broker password.
// The rule, in this one place, compares names case-insensitively (Windows
// names are case-insensitive) and withholds a variable when its name
//
//   - starts with KANADE_ (the agent's own settings: broker URL, user,
//     password, token, nkey, creds, command-signing key, config path) or
//     NATS_ (the nats ecosystem's connection settings, NATS_URL and
//     NATS_CREDS included: a URL may carry user:password);
//   - contains TOKEN, PASSWORD, PASSWD, SECRET, CREDENTIAL or CREDS
//     (GITHUB_TOKEN, PGPASSWORD, AWS_SECRET_ACCESS_KEY,
//     GOOGLE_APPLICATION_CREDENTIALS);
//   - has KEY, NKEY or APIKEY as one of its "_"-separated words (API_KEY,
//     SIGNING_KEY, NATS_NKEY; not KEYBOARD_LAYOUT or MONKEY).
//
// Everything else is kept, so PATH, HOME, USERPROFILE, SYSTEMROOT, WINDIR,
// COMSPEC, TEMP, LANG and the like still let scripts work. The same rule
// applies to the environment of a run_as identity (its profile may hold
// machine-wide variables too), and to %VAR% expansion in cwd, which would
// otherwise echo a secret back in the "cwd does not exist" error.
func withheldFromScripts(name string) bool {
	n := strings.ToUpper(name)
	for _, p := range withheldPrefixes {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	for _, p := range withheldParts {
		if strings.Contains(n, p) {
			return true
		}
	}
	for _, w := range strings.Split(n, "_") {
		if slices.Contains(withheldWords, w) {
			return true
		}
	}
	return false
}

// withheldPrefixes, withheldParts and withheldWords are withheldFromScripts'
// rule, upper case.
var (
	withheldPrefixes = []string{"KANADE_", "NATS_"}
	withheldParts    = []string{"TOKEN", "PASSWORD", "PASSWD", "SECRET", "CREDENTIAL", "CREDS"}
	withheldWords    = []string{"KEY", "NKEY", "APIKEY"}
)

// scriptEnv returns environ ("NAME=value" entries, as os.Environ gives them)
// without the withheld variables, in the same order. Entries whose name
// starts with "=" (Windows' per-drive directories, "=C:=C:\x") are kept.
func scriptEnv(environ []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		if withheldFromScripts(envName(kv)) {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// envName is the name part of a "NAME=value" entry; a leading "=" belongs to
// the name (Windows' "=C:=C:\x").
func envName(kv string) string {
	start := 0
	if strings.HasPrefix(kv, "=") {
		start = 1
	}
	if i := strings.IndexByte(kv[start:], '='); i >= 0 {
		return kv[:start+i]
	}
	return kv
}
