package core_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kanadehq/kanade-go/internal/core"
)

// TestSubjects checks every subject builder against SPEC §3, literally.
func TestSubjects(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{core.SubjectCommandsAll, "commands.all"},
		{core.SubjectCommandsWildcard, "commands.>"},
		{core.SubjectCommandsGroup("canary"), "commands.group.canary"},
		{core.SubjectCommandsPC("PC-0042"), "commands.pc.PC-0042"},
		{core.SubjectResults("0b8f3c1e-9a77"), "results.0b8f3c1e-9a77"},
		{core.SubjectEventsStarted("5d2a9e64", "PC-0042"), "events.started.5d2a9e64.PC-0042"},
		{core.SubjectHeartbeat("PC-0042"), "heartbeat.PC-0042"},
		{core.SubjectHeartbeatWildcard, "heartbeat.>"},
		{core.SubjectPing("PC-0042"), "agents.PC-0042.ping"},
		{core.SubjectLogsFetch("PC-0042"), "logs.fetch.PC-0042"},
		{core.SubjectKill("5d2a9e64"), "kill.5d2a9e64"},
		{core.SubjectInventory("PC-0042", core.SubjectInventoryHWSuffix), "inventory.PC-0042.hw"},
		{core.SubjectInventory("PC-0042", core.SubjectInventorySWSuffix), "inventory.PC-0042.sw"},
		{core.SubjectInventory("PC-0042", core.SubjectInventoryNetSuffix), "inventory.PC-0042.net"},
		{core.SubjectAudit("run", ""), "audit.operator.run"},
		{core.SubjectAudit("kill", "5d2a9e64"), "audit.operator.kill.5d2a9e64"},
		{core.ResultOutputKey("r-big", core.OutputStdout), "r-big/stdout"},
		{core.ResultOutputKey("r-big", core.OutputStderr), "r-big/stderr"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// TestResourceNames checks the stream, bucket and object store names of SPEC §5.
func TestResourceNames(t *testing.T) {
	got := []string{
		core.StreamInventory, core.StreamResults, core.StreamExec, core.StreamEvents, core.StreamAudit, core.StreamObsEvents,
		core.BucketScriptCurrent, core.BucketScriptStatus, core.BucketAgentsState, core.BucketAgentConfig, core.BucketAgentGroups,
		core.BucketSchedules, core.BucketJobs, core.BucketFleetConfig, core.BucketJobsYAML, core.BucketSchedulesYAML,
		core.ObjectAgentReleases, core.ObjectAppPackages, core.ObjectScripts, core.ObjectResultOutput,
	}
	want := []string{
		"INVENTORY", "RESULTS", "EXEC", "EVENTS", "AUDIT", "OBS_EVENTS",
		"script_current", "script_status", "agents_state", "agent_config", "agent_groups",
		"schedules", "jobs", "fleet_config", "jobs_yaml", "schedules_yaml",
		"agent_releases", "app_packages", "scripts", "result_output",
	}
	if !slices.Equal(got, want) {
		t.Errorf("names = %q\n want %q", got, want)
	}
	if core.ConfigKeyGroup("canary") != "groups.canary" || core.ConfigKeyPC("PC-1") != "pcs.PC-1" || core.ConfigKeyGlobal != "global" {
		t.Error("agent_config keys differ from SPEC §4")
	}
}

func TestPCFromHeartbeatSubject(t *testing.T) {
	for _, tc := range []struct {
		in   string
		pc   string
		isHB bool
	}{
		{"heartbeat.PC-0042", "PC-0042", true},
		{core.SubjectHeartbeat("dev-pc-1"), "dev-pc-1", true},
		{"heartbeat.", "", false},
		{"heartbeat", "", false},
		{"results.x", "", false},
	} {
		pc, ok := core.PCFromHeartbeatSubject(tc.in)
		if pc != tc.pc || ok != tc.isHB {
			t.Errorf("PCFromHeartbeatSubject(%q) = %q, %v; want %q, %v", tc.in, pc, ok, tc.pc, tc.isHB)
		}
	}
}

var consumerNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func TestReplayConsumerName(t *testing.T) {
	for _, tc := range []struct{ pc, want string }{
		{"PC-01", "agent_replay_PC-01"},
		{"pc_under-score", "agent_replay_pc_under-score"},
		{"pc.with.dots", "agent_replay_pc_with_dots"},
		{"pc with spaces", "agent_replay_pc_with_spaces"},
		{"pc*", "agent_replay_pc_"},
		{"pc>", "agent_replay_pc_"},
		{"a/b\\c:d", "agent_replay_a_b_c_d"},
		{"tab\there", "agent_replay_tab_here"},
		// One underscore per character, not per byte (as upstream's chars()).
		{"café", "agent_replay_caf_"},
		{"端末-7", "agent_replay___-7"},
		{"ＰＣ1", "agent_replay___1"},
		{"", "agent_replay_"},
	} {
		got := core.ReplayConsumerName(tc.pc)
		if got != tc.want {
			t.Errorf("ReplayConsumerName(%q) = %q, want %q", tc.pc, got, tc.want)
		}
		if !consumerNameRE.MatchString(got) {
			t.Errorf("ReplayConsumerName(%q) = %q has characters a consumer name cannot", tc.pc, got)
		}
	}
	if core.SanitizeToken("ok_-09AZaz") != "ok_-09AZaz" {
		t.Error("SanitizeToken changed an already safe token")
	}
}

func TestParseConfigKey(t *testing.T) {
	for _, tc := range []struct {
		key, kind, name string
		ok              bool
	}{
		{"global", "global", "", true},
		{"groups.canary", "group", "canary", true},
		{core.ConfigKeyGroup("wave1"), "group", "wave1", true},
		{"pcs.PC-0042", "pc", "PC-0042", true},
		{core.ConfigKeyPC("dev-pc-1"), "pc", "dev-pc-1", true},
		{"groups.", "", "", false},
		{"pcs.", "", "", false},
		{"target_version", "", "", false}, // legacy bare key: ignored
		{core.ConfigKeyLegacyTarget, "", "", false},
		{"Global", "", "", false},
		{"group.canary", "", "", false},
		{"", "", "", false},
	} {
		kind, name, ok := core.ParseConfigKey(tc.key)
		if kind != tc.kind || name != tc.name || ok != tc.ok {
			t.Errorf("ParseConfigKey(%q) = %q, %q, %v; want %q, %q, %v", tc.key, kind, name, ok, tc.kind, tc.name, tc.ok)
		}
	}
}

func TestCommandFilterSubjects(t *testing.T) {
	for _, tc := range []struct {
		groups []string
		want   []string
	}{
		{nil, []string{"commands.all", "commands.pc.PC-1"}},
		{[]string{"canary"}, []string{"commands.all", "commands.pc.PC-1", "commands.group.canary"}},
		// The list follows the membership set: sorted, unique, no empty names.
		{[]string{"wave1", "canary", "wave1", ""}, []string{"commands.all", "commands.pc.PC-1", "commands.group.canary", "commands.group.wave1"}},
	} {
		in := slices.Clone(tc.groups)
		got := core.CommandFilterSubjects("PC-1", tc.groups)
		if !slices.Equal(got, tc.want) {
			t.Errorf("CommandFilterSubjects(PC-1, %q) = %q, want %q", tc.groups, got, tc.want)
		}
		if !slices.Equal(in, tc.groups) {
			t.Errorf("CommandFilterSubjects changed its input: %q → %q", in, tc.groups)
		}
	}
}

func TestValidToken(t *testing.T) {
	for _, s := range []string{"PC-0042", "dev-pc-1", "canary", "wave_1", "端末", "a:b"} {
		if !core.ValidToken(s) {
			t.Errorf("ValidToken(%q) = false, want true", s)
		}
	}
	for _, s := range []string{"", "a.b", ".", "*", ">", "pc*", "pc>", "a b", "a\tb", "a\nb", "a\rb", "a\x00b"} {
		if core.ValidToken(s) {
			t.Errorf("ValidToken(%q) = true, want false", s)
		}
	}
}

func TestSmallContractConstants(t *testing.T) {
	if core.ConnectionName("agent", "PC-1") != "kanade-agent-PC-1" || core.ConnectionName("cli", "") != "kanade-cli" {
		t.Error("ConnectionName")
	}
	for goos, want := range map[string]string{"windows": "windows", "linux": "linux", "darwin": "macos"} {
		if got := core.OSFamilyOf(goos); got != want {
			t.Errorf("OSFamilyOf(%s) = %s, want %s", goos, got, want)
		}
	}
	if got := core.ReleaseKey("0.38.2", "darwin", "arm64"); got != "0.38.2-macos-arm64" {
		t.Errorf("ReleaseKey = %q", got)
	}
	if core.ExitKilled != -1 || core.ExitSignatureDenied != 123 || core.ExitVersionPin != 124 || core.ExitDeadline != 125 ||
		core.ExitRevoked != 126 || core.ExitStaleness != 127 || core.ExitCodeUpdate != 64 {
		t.Error("exit codes differ from SPEC §4 / §6.10")
	}
	if core.DefaultLogTailLines != 500 || core.MaxLogsReply != 800*1024 {
		t.Error("logs.fetch limits differ from SPEC §3")
	}
	for in, want := range map[string]string{
		"nats://user:secret@host:4222":           "nats://user:xxxxx@host:4222",
		"nats://tok@host:4222":                   "nats://xxxxx@host:4222",
		"nats://127.0.0.1:4222":                  "nats://127.0.0.1:4222",
		"nats://a:b@h1:4222, nats://c:d@h2:4222": "nats://a:xxxxx@h1:4222,nats://c:xxxxx@h2:4222",
	} {
		if got := core.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// SPEC-2 §1: upstream's release keys, looked for first.
func TestReleaseKeys(t *testing.T) {
	cases := []struct {
		goos, goarch string
		want         string
	}{
		{"windows", "amd64", "0.46.0,0.46.0-windows-amd64"},
		{"windows", "arm64", "0.46.0-windows-arm64"},
		{"linux", "amd64", "0.46.0-linux-x86_64,0.46.0-linux-amd64"},
		{"linux", "arm64", "0.46.0-linux-aarch64,0.46.0-linux-arm64"},
		{"darwin", "arm64", "0.46.0-macos-aarch64,0.46.0-macos-arm64"},
		{"darwin", "amd64", "0.46.0-macos-amd64"},
	}
	for _, c := range cases {
		if got := strings.Join(core.ReleaseKeys("0.46.0", c.goos, c.goarch), ","); got != c.want {
			t.Errorf("ReleaseKeys(%s/%s) = %s, want %s", c.goos, c.goarch, got, c.want)
		}
	}
}

func TestValidManifestID(t *testing.T) {
	for id, want := range map[string]bool{
		"inventory-software": true, "a": true, "A_1-b": true, strings.Repeat("x", 128): true,
		"": false, strings.Repeat("x", 129): false, "-lead": false, "_lead": false,
		"has.dot": false, "has space": false, "wild*": false, "ünï": false, "a/b": false,
	} {
		if got := core.ValidManifestID(id); got != want {
			t.Errorf("ValidManifestID(%q) = %v, want %v", id, got, want)
		}
	}
}
