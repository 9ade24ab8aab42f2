package cmd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent"
)

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadAgentConfigUpstreamTOML(t *testing.T) {
	// Upstream agent.toml with its template replaced by a value loads unchanged.
	p := writeFile(t, "agent.toml", `# Sprint 1: minimal config.
[agent]
id = 'pc-0042'
nats_url = 'nats://10.0.0.5:4222'

[log]
path = 'logs/agent.log'
level = 'info'
`)
	cfg, load, err := loadAgentConfig(p, envOf(nil), nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ID != "pc-0042" || cfg.NATSURL != "nats://10.0.0.5:4222" || cfg.Log.Path != "logs/agent.log" || cfg.Log.Level != "info" {
		t.Fatalf("cfg = %+v", cfg)
	}
	if cfg.Log.KeepDays != 14 || cfg.Log.Format != "json" || cfg.MaxConcurrent != runtime.NumCPU() {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
	if load.File != p || len(load.Warnings) != 0 {
		t.Fatalf("load = %+v", load)
	}
}

func TestLoadAgentConfigYAMLAndWarnings(t *testing.T) {
	p := writeFile(t, "agent.yaml", `agent:
  id: lab-7
  data_dir: /tmp/kanade-lab
  max_concurrent: 3
  groups: [canary]
  colour: blue
log:
  keep_days: 0
  format: text
`)
	cfg, load, err := loadAgentConfig(p, envOf(nil), nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ID != "lab-7" || cfg.DataDir != "/tmp/kanade-lab" || cfg.MaxConcurrent != 3 || cfg.Log.KeepDays != 0 || cfg.Log.Format != "text" {
		t.Fatalf("cfg = %+v", cfg)
	}
	if len(cfg.Groups) != 1 || cfg.Groups[0] != "canary" {
		t.Fatalf("deprecated groups not parsed: %v", cfg.Groups)
	}
	joined := strings.Join(load.Warnings, "\n")
	if !strings.Contains(joined, `"agent.colour"`) || !strings.Contains(joined, "agent.groups") {
		t.Fatalf("warnings = %v", load.Warnings)
	}
}

func TestLoadAgentConfigEnvOverridesAndResolution(t *testing.T) {
	p := writeFile(t, "agent.toml", "[agent]\nid = 'from-file'\nnats_url = 'nats://file:4222'\n")
	env := map[string]string{
		"KANADE_AGENT_CONFIG":   p,
		"KANADE_AGENT_ID":       "from-env",
		"KANADE_NATS_URL":       "nats://env:4222",
		"KANADE_AGENT_DATA_DIR": "/tmp/env-data",
		"KANADE_LOG_LEVEL":      "debug",
		"KANADE_NATS_TOKEN":     "s3cret",
		"KANADE_NATS_USER":      "agent-pc",
		"KANADE_NATS_PASSWORD":  "pa55",
	}
	cfg, load, err := loadAgentConfig("", envOf(env), nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if load.File != p {
		t.Fatalf("KANADE_AGENT_CONFIG not used: %+v", load)
	}
	if cfg.ID != "from-env" || cfg.NATSURL != "nats://env:4222" || cfg.DataDir != "/tmp/env-data" || cfg.Log.Level != "debug" || cfg.Token != "s3cret" ||
		cfg.User != "agent-pc" || cfg.Password != "pa55" {
		t.Fatalf("env not applied: %+v", cfg)
	}
	if cfg.Log.Format != "text" {
		t.Fatalf("terminal should log text, got %s", cfg.Log.Format)
	}
	// --config beats KANADE_AGENT_CONFIG; explicit flags beat env.
	other := writeFile(t, "other.toml", "[agent]\nid = 'other'\n")
	delete(env, "KANADE_AGENT_ID")
	cfg, load, err = loadAgentConfig(other, envOf(env), map[string]string{"server": "nats://flag:4222"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if load.File != other || cfg.ID != "other" || cfg.NATSURL != "nats://flag:4222" {
		t.Fatalf("precedence wrong: %+v %+v", load, cfg)
	}
}

func TestLoadAgentConfigRejects(t *testing.T) {
	tmpl := writeFile(t, "agent.toml", "[agent]\nid = '{{ system.host }}'\n")
	_, _, err := loadAgentConfig(tmpl, envOf(nil), nil, false)
	if err == nil || !strings.Contains(err.Error(), "{{ }} templates") {
		t.Fatalf("template: err = %v", err)
	}
	var buf bytes.Buffer
	ReportError(&buf, err)
	if !strings.Contains(buf.String(), "hint: replace each template") {
		t.Fatalf("no hint: %s", buf.String())
	}
	tok := writeFile(t, "agent.toml", "[agent]\nid = 'x'\ntoken = 'abc'\n")
	if _, _, err := loadAgentConfig(tok, envOf(nil), nil, false); err == nil || !strings.Contains(err.Error(), "must not hold a token") {
		t.Fatalf("token in file: err = %v", err)
	}
	if _, _, err := loadAgentConfig(filepath.Join(t.TempDir(), "missing.toml"), envOf(nil), nil, false); err == nil {
		t.Fatal("missing explicit file accepted")
	}
	badID := writeFile(t, "agent.toml", "[agent]\nid = 'has*star'\n")
	if _, _, err := loadAgentConfig(badID, envOf(nil), nil, false); err == nil || !strings.Contains(err.Error(), "cannot be used in subjects") {
		t.Fatalf("bad id: err = %v", err)
	}
	badLevel := writeFile(t, "agent.toml", "[log]\nlevel = 'loud'\n")
	if _, _, err := loadAgentConfig(badLevel, envOf(nil), nil, false); err == nil {
		t.Fatal("bad level accepted")
	}
}

func TestLoadAgentConfigNoFileUsesDefaults(t *testing.T) {
	if _, err := os.Stat(winagent.DefaultConfigFile()); err == nil {
		t.Skip("a real agent config exists at the default path on this machine")
	}
	// The host name up to its first dot: a pc id is one subject token.
	host, _ := os.Hostname()
	host, _, _ = strings.Cut(host, ".")
	cfg, load, err := loadAgentConfig("", envOf(nil), nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if load.File != "" || cfg.ID != host || cfg.NATSURL != core.DefaultNATSURL {
		t.Fatalf("defaults: %+v %+v", load, cfg)
	}
}

func TestAgentCmdFlags(t *testing.T) {
	var got *AgentOptions
	f := &cmdutil.Factory{IO: cmdutil.TestIO(nil, &bytes.Buffer{}, &bytes.Buffer{}, false)}
	root := NewRootCmd(f)
	for _, c := range root.Commands() {
		if c.Name() == "agent" {
			root.RemoveCommand(c)
		}
	}
	root.AddCommand(NewAgentCmd(f, func(_ context.Context, o *AgentOptions) error { got = o; return nil }))
	root.SetArgs([]string{"agent", "--config", "x.toml", "-s", "nats://flag:4222"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if got == nil || got.ConfigFile != "x.toml" || got.Overrides["server"] != "nats://flag:4222" {
		t.Fatalf("options = %+v", got)
	}
	if _, ok := got.Overrides["log-level"]; ok {
		t.Fatal("an unset global flag became an override")
	}
}

func TestServiceLogPath(t *testing.T) {
	base := winagent.Config{DataDir: filepath.Join("ProgramData", "Kanade", "data"), Log: winagent.LogConfig{KeepDays: 14}}
	withPath := base
	withPath.Log.Path = "custom"
	stdoutOnly := base
	stdoutOnly.Log.KeepDays = 0
	for _, tc := range []struct {
		name, goos string
		cfg        winagent.Config
		want       string
	}{
		{"windows service defaults beside the data dir", "windows", base, filepath.Join("ProgramData", "Kanade", "logs")},
		{"an explicit log.path wins", "windows", withPath, "custom"},
		{"keep_days 0 means stdout only", "windows", stdoutOnly, ""},
		{"systemd captures stdout", "linux", base, ""},
	} {
		if got := serviceLogPath(tc.goos, tc.cfg); got != tc.want {
			t.Errorf("%s: serviceLogPath = %q, want %q", tc.name, got, tc.want)
		}
	}
}
