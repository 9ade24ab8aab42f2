package cmd

import (
	"bytes"
	"sort"
	"strings"
	"testing"
	"unicode"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/spf13/cobra"
)

// expectedCommands is the whole command tree. A new command must be added
// here (and get a Short and Args) before this test passes.
var expectedCommands = []string{
	"kanade",
	"kanade agent",
	"kanade agent current",
	"kanade agent install",
	"kanade agent logs",
	"kanade agent publish",
	"kanade agent rollout",
	"kanade agent start",
	"kanade agent stop",
	"kanade agent uninstall",
	"kanade completion",
	"kanade command-key",
	"kanade command-key break-glass",
	"kanade command-key generate",
	"kanade config",
	"kanade config clear",
	"kanade config effective",
	"kanade config get",
	"kanade config set",
	"kanade config unset",
	"kanade devbroker",
	"kanade exec",
	"kanade exec list",
	"kanade exec status",
	"kanade freeze",
	"kanade freeze clear",
	"kanade freeze set",
	"kanade freeze status",
	"kanade group",
	"kanade group add",
	"kanade group list",
	"kanade group members",
	"kanade group rm",
	"kanade group set",
	"kanade jetstream",
	"kanade job",
	"kanade job create",
	"kanade job delete",
	"kanade job export",
	"kanade job list",
	"kanade job show",
	"kanade job validate",
	"kanade jetstream delete",
	"kanade jetstream reset",
	"kanade jetstream setup",
	"kanade jetstream status",
	"kanade kill",
	"kanade ping",
	"kanade revoke",
	"kanade run",
	"kanade schedule",
	"kanade schedule coverage",
	"kanade schedule create",
	"kanade schedule delete",
	"kanade schedule disable",
	"kanade schedule enable",
	"kanade schedule export",
	"kanade schedule list",
	"kanade schedule show",
	"kanade schedule status",
	"kanade schedule validate",
	"kanade scheduler",
	"kanade scheduler install",
	"kanade scheduler start",
	"kanade scheduler status",
	"kanade scheduler stop",
	"kanade scheduler uninstall",
	"kanade script",
	"kanade script delete",
	"kanade script list",
	"kanade script publish",
	"kanade status",
	"kanade unrevoke",
	"kanade version",
}

// shortVerbs are the imperative verbs a Short may start with. Extend the
// list when a new command needs another verb; a noun ("Status of …") or a
// third person ("Shows …") does not belong here.
var shortVerbs = map[string]bool{
	"Add": true, "Allow": true, "Ask": true, "Check": true, "Create": true, "Delete": true, "Disable": true, "Enable": true,
	"Fetch": true, "Generate": true, "Install": true, "List": true, "Manage": true, "Print": true,
	"Publish": true, "Read": true, "Remove": true, "Replace": true, "Roll": true, "Run": true,
	"Set": true, "Show": true, "Start": true, "Stop": true, "Uninstall": true, "Upload": true,
}

// TestCommandTree walks every command (after tailscale's cli_test.go
// TestDocs): Short starts with a capital imperative verb and has no final
// period, every command declares Args, and the set of commands is the
// expected one.
func TestCommandTree(t *testing.T) {
	root := NewRootCmd(&cmdutil.Factory{IO: cmdutil.TestIO(nil, &bytes.Buffer{}, &bytes.Buffer{}, false)})
	var got []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		path := c.CommandPath()
		got = append(got, path)
		short := c.Short
		switch {
		case short == "":
			t.Errorf("%s: no Short", path)
		case !unicode.IsUpper([]rune(short)[0]):
			t.Errorf("%s: Short %q does not start with a capital letter", path, short)
		case strings.HasSuffix(short, "."):
			t.Errorf("%s: Short %q ends with a period", path, short)
		default:
			if verb, _, _ := strings.Cut(short, " "); !shortVerbs[verb] {
				t.Errorf("%s: Short %q does not start with an imperative verb from shortVerbs", path, short)
			}
		}
		if c.Args == nil {
			t.Errorf("%s: declares no Args", path)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	sort.Strings(got)
	want := append([]string(nil), expectedCommands...)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("command tree:\n  got  %q\n  want %q", got, want)
	}
}

// TestRootWiring checks the explicit wiring in NewRootCmd and NewAgentCmd:
// each command listed here must be added there, so a forgotten AddCommand
// fails this test by name. (cobra adds "help" only when the tree runs.)
func TestRootWiring(t *testing.T) {
	root := NewRootCmd(&cmdutil.Factory{IO: cmdutil.TestIO(nil, &bytes.Buffer{}, &bytes.Buffer{}, false)})
	for _, tc := range []struct {
		parent *cobra.Command
		want   []string
	}{
		{root, []string{
			"agent", "command-key", "completion", "config", "devbroker", "exec", "freeze", "group", "jetstream", "job",
			"kill", "ping", "revoke", "run", "schedule", "scheduler", "script", "status", "unrevoke", "version",
		}},
		{findCommand(t, root, "agent"), []string{
			"current", "install", "logs", "publish", "rollout", "start", "stop", "uninstall",
		}},
	} {
		var got []string
		for _, c := range tc.parent.Commands() {
			got = append(got, c.Name())
		}
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s subcommands:\n  got  %q\n  want %q", tc.parent.CommandPath(), got, tc.want)
		}
	}
}

// findCommand returns parent's direct subcommand called name.
func findCommand(t *testing.T, parent *cobra.Command, name string) *cobra.Command {
	t.Helper()
	for _, c := range parent.Commands() {
		if c.Name() == name {
			return c
		}
	}
	t.Fatalf("%s has no subcommand %q", parent.CommandPath(), name)
	return nil
}
