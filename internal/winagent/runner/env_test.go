package runner

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kanadehq/kanade-go/internal/jobs"
)

func TestWithheldFromScripts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		withheld bool
	}{
		// The agent's own settings and the nats ecosystem's.
		{"KANADE_NATS_PASSWORD", true},
		{"KANADE_NATS_TOKEN", true},
		{"KANADE_NATS_URL", true},
		{"KANADE_AGENT_ID", true},
		{"kanade_nats_user", true}, // Windows names are case-insensitive
		{"NATS_URL", true},
		{"NATS_CREDS", true},
		{"NATS_NKEY", true},
		// Credentials by name, anywhere in it.
		{"GITHUB_TOKEN", true},
		{"PGPASSWORD", true},
		{"MYSQL_PASSWD", true},
		{"AWS_SECRET_ACCESS_KEY", true},
		{"GOOGLE_APPLICATION_CREDENTIALS", true},
		{"Deploy_Creds", true},
		{"API_KEY", true},
		{"STRIPE_APIKEY", true},
		{"SIGNING_KEY_FILE", true},
		// What scripts need, and look-alikes that are not secrets.
		{"PATH", false},
		{"HOME", false},
		{"USERPROFILE", false},
		{"SystemRoot", false},
		{"WINDIR", false},
		{"ComSpec", false},
		{"TEMP", false},
		{"TMPDIR", false},
		{"PWD", false},
		{"LANG", false},
		{"PROCESSOR_ARCHITECTURE", false},
		{"KEYBOARD_LAYOUT", false},
		{"MONKEY", false},
		{"MYNATS_HOST", false},
		{"=C:", false},
	} {
		if got := withheldFromScripts(tc.name); got != tc.withheld {
			t.Errorf("withheldFromScripts(%q) = %v, want %v", tc.name, got, tc.withheld)
		}
	}
}

func TestScriptEnv(t *testing.T) {
	in := []string{
		"=C:=C:\\work", "PATH=/usr/bin:/bin", "KANADE_NATS_TOKEN=t0k", "HOME=/root",
		"NATS_URL=nats://u:p@host", "EMPTY=", "GITHUB_TOKEN=x=y", "LANG=C.UTF-8",
	}
	want := []string{"=C:=C:\\work", "PATH=/usr/bin:/bin", "HOME=/root", "EMPTY=", "LANG=C.UTF-8"}
	if got := scriptEnv(in); !slices.Equal(got, want) {
		t.Fatalf("scriptEnv = %q, want %q", got, want)
	}
	// Nothing left is still an environment, never "inherit everything".
	if got := scriptEnv([]string{"NATS_TOKEN=x"}); got == nil || len(got) != 0 {
		t.Fatalf("scriptEnv of only secrets = %#v, want an empty, non-nil slice", got)
	}
}

// TestMaxScriptIsUpstreamCap keeps the runner's cap and the scripts
// catalog's in step.
func TestMaxScriptIsUpstreamCap(t *testing.T) {
	if MaxScript != jobs.MaxScriptObject {
		t.Fatalf("runner.MaxScript = %d, jobs.MaxScriptObject = %d", MaxScript, jobs.MaxScriptObject)
	}
}

func TestStageSh(t *testing.T) {
	dir := filepath.Join(tempDir(t), "nested") // created on demand
	script := "echo 'héllo'\nexit 3\n"
	path, cleanup, err := stageSh(dir, script)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != script {
		t.Fatalf("staged %q, %v; want the script unchanged (no BOM)", b, err)
	}
	cleanup()
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("left behind after cleanup: %v", left)
	}
}
