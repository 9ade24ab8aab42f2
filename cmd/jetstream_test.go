package cmd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// specJetStreamResource is one row of SPEC §5, written out here rather than
// read from internal/core so the tests check core's list against the spec.
type specJetStreamResource struct {
	kind     string
	name     string
	stream   string
	subjects []string // streams only
	maxAge   time.Duration
	maxBytes int64 // production; -1 unlimited
	// perSubject is EXEC's 1 and a KV bucket's history; -1 otherwise.
	perSubject int64
}

const (
	specMiB = int64(1) << 20
	specGiB = int64(1) << 30
	specDay = 24 * time.Hour
)

var specJetStreamResources = []specJetStreamResource{
	{"stream", "INVENTORY", "INVENTORY", []string{"inventory.>"}, 90 * specDay, specGiB, -1},
	{"stream", "RESULTS", "RESULTS", []string{"results.>"}, 30 * specDay, 2 * specGiB, -1},
	{"stream", "EXEC", "EXEC", []string{"commands.>"}, 7 * specDay, 64 * specMiB, 1},
	{"stream", "EVENTS", "EVENTS", []string{"events.>"}, 7 * specDay, 256 * specMiB, -1},
	{"stream", "AUDIT", "AUDIT", []string{"audit.>"}, 90 * specDay, 512 * specMiB, -1},
	{"stream", "OBS_EVENTS", "OBS_EVENTS", []string{"obs.>"}, 90 * specDay, 512 * specMiB, -1},
	{"stream", "NOTIFICATIONS", "NOTIFICATIONS", []string{"notifications.>"}, 90 * specDay, 512 * specMiB, -1},
	{"kv", "script_current", "KV_script_current", nil, 0, -1, 5},
	{"kv", "script_status", "KV_script_status", nil, 0, -1, 5},
	{"kv", "agents_state", "KV_agents_state", nil, 0, -1, 1},
	{"kv", "agent_config", "KV_agent_config", nil, 0, -1, 1},
	{"kv", "agent_groups", "KV_agent_groups", nil, 0, -1, 1},
	{"kv", "agent_groups_derived", "KV_agent_groups_derived", nil, 0, -1, 1},
	{"kv", "agent_meta", "KV_agent_meta", nil, 0, -1, 5},
	{"kv", "group_contacts", "KV_group_contacts", nil, 0, -1, 5},
	{"kv", "server_settings", "KV_server_settings", nil, 0, -1, 1},
	{"kv", "notifications_read", "KV_notifications_read", nil, 0, -1, 1},
	{"kv", "schedules", "KV_schedules", nil, 0, -1, 5},
	{"kv", "jobs", "KV_jobs", nil, 0, -1, 5},
	{"kv", "fleet_config", "KV_fleet_config", nil, 0, -1, 1},
	{"kv", "jobs_yaml", "KV_jobs_yaml", nil, 0, -1, 5},
	{"kv", "schedules_yaml", "KV_schedules_yaml", nil, 0, -1, 5},
	{"object", "agent_releases", "OBJ_agent_releases", nil, 0, -1, -1},
	{"object", "app_packages", "OBJ_app_packages", nil, 0, -1, -1},
	{"object", "scripts", "OBJ_scripts", nil, 0, -1, -1},
	{"object", "result_output", "OBJ_result_output", nil, 30 * specDay, specGiB, -1},
	{"object", "collections", "OBJ_collections", nil, 30 * specDay, 5 * specGiB, -1},
}

// maxBytesFor is the spec's cap for a profile: dev divides by 64.
func (r specJetStreamResource) maxBytesFor(profile string) int64 {
	if profile == "dev" && r.maxBytes > 0 {
		return r.maxBytes / 64
	}
	return r.maxBytes
}

// jsTestServer runs a natstest broker and returns a JetStream context on it.
func jsTestServer(t *testing.T, opts ...natstest.Option) (*natstest.Server, jetstream.JetStream) {
	t.Helper()
	srv := natstest.Run(t, opts...)
	_, js := natstest.JetStream(t, srv.URL())
	return srv, js
}

func jsFunc(js jetstream.JetStream) func(context.Context) (jetstream.JetStream, error) {
	return func(context.Context) (jetstream.JetStream, error) { return js, nil }
}

// jsSetupDev runs core setup with the dev profile, as `kanade devbroker` does.
func jsSetupDev(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := core.Setup(ctx, js, core.SetupOptions{Profile: core.ProfileDev}, nil); err != nil {
		t.Fatalf("setup: %v", err)
	}
}

// jsExecArgv runs a command built by newCmd on argv with quiet cobra output.
func jsExecArgv(t *testing.T, c *cobra.Command, args ...string) error {
	t.Helper()
	c.SetArgs(args)
	c.SetOut(io.Discard)
	c.SetErr(io.Discard)
	c.SilenceErrors = true
	c.SilenceUsage = true
	return c.ExecuteContext(context.Background())
}

func jsTestFactory() *cmdutil.Factory {
	var out, errOut bytes.Buffer
	return &cmdutil.Factory{IO: cmdutil.TestIO(nil, &out, &errOut, false)}
}

// jsWantUsageError fails unless err is a usage error (exit 2) mentioning every word.
func jsWantUsageError(t *testing.T, err error, words ...string) {
	t.Helper()
	var ue *cmdutil.UsageError
	if !errors.As(err, &ue) {
		t.Fatalf("want a usage error, got %T %v", err, err)
	}
	if code := ReportError(io.Discard, err); code != cmdutil.ExitUsage {
		t.Fatalf("exit code %d, want %d", code, cmdutil.ExitUsage)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not mention %q", err, w)
		}
	}
}

func TestJetstreamParent(t *testing.T) {
	f := jsTestFactory()
	c := NewJetstreamCmd(f)
	if c.Args == nil {
		t.Fatal("jetstream declares no Args")
	}
	var names []string
	for _, sub := range c.Commands() {
		names = append(names, sub.Name())
		if sub.Args == nil {
			t.Errorf("%s declares no Args", sub.Name())
		}
	}
	if got := strings.Join(names, ","); got != "delete,reset,setup,status" {
		t.Fatalf("subcommands = %s", got)
	}
	err := jsExecArgv(t, NewJetstreamCmd(f), "stup")
	jsWantUsageError(t, err, "stup")
}

func TestParseSetupFlags(t *testing.T) {
	so, err := parseSetupFlags("dev", 3)
	if err != nil || so.Profile != core.ProfileDev || so.Replicas != 3 {
		t.Fatalf("parseSetupFlags(dev, 3) = %+v, %v", so, err)
	}
	so, err = parseSetupFlags("production", 1)
	if err != nil || so.Profile != core.ProfileProduction || so.Replicas != 1 {
		t.Fatalf("parseSetupFlags(production, 1) = %+v, %v", so, err)
	}
	for _, tt := range []struct {
		profile  string
		replicas int
		flag     string
	}{
		{"prod", 1, "--profile"},
		{"dev", 0, "--replicas"},
		{"dev", -2, "--replicas"},
		{"dev", 6, "--replicas"},
	} {
		_, err := parseSetupFlags(tt.profile, tt.replicas)
		jsWantUsageError(t, err, tt.flag)
	}
}

func TestJSHumanBytes(t *testing.T) {
	for in, want := range map[int64]string{
		-1: "unlimited", 0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB",
		16 * specMiB: "16 MiB", 2 * specGiB: "2 GiB", 5*specGiB + specGiB/3: "5.3 GiB",
	} {
		if got := jsHumanBytes(in); got != want {
			t.Errorf("jsHumanBytes(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestFormatDiff(t *testing.T) {
	got := formatDiff([]core.FieldDiff{
		{Field: "max_age", Have: "1h", Want: "720h", Fixed: true},
		{Field: "storage", Have: "Memory", Want: "File", Fixed: false},
	})
	if want := "max_age 1h → 720h; storage Memory → File (not in place)"; got != want {
		t.Fatalf("formatDiff = %q, want %q", got, want)
	}
}

// jsDeadConn returns a JetStream context whose connection is closed, so
// every lookup fails at once: the broker's answer is unknown.
func jsDeadConn(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv := natstest.Run(t)
	nc := natstest.Connect(t, srv.URL(), nats.NoReconnect())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	return js
}
