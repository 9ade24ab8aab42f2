package cmd

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// completeArgv runs `kanade __complete argv...` (what the shell scripts call)
// on a root with a probe command that uses the dynamic completions, and
// returns the candidate lines (the trailing ":<directive>" line dropped).
func completeArgv(t *testing.T, argv ...string) []string {
	t.Helper()
	var out, errOut bytes.Buffer
	f := &cmdutil.Factory{IO: cmdutil.TestIO(&bytes.Buffer{}, &out, &errOut, false)}
	root := NewRootCmd(f)
	probe := &cobra.Command{
		Use:               "probe [PC]",
		Short:             "Probe completion",
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completePCs(f),
		RunE:              func(*cobra.Command, []string) error { return nil },
	}
	probe.Flags().String("group", "", "group")
	if err := probe.RegisterFlagCompletionFunc("group", completeGroups(f)); err != nil {
		t.Fatal(err)
	}
	probe.Flags().String("pc", "", "pc")
	if err := probe.RegisterFlagCompletionFunc("pc", completePCFlag(f)); err != nil {
		t.Fatal(err)
	}
	membership := &cobra.Command{
		Use:               "membership PC G...",
		Short:             "Probe pc-then-group completion",
		Args:              cobra.ArbitraryArgs,
		ValidArgsFunction: completePCThenGroups(f),
		RunE:              func(*cobra.Command, []string) error { return nil },
	}
	root.AddCommand(probe, membership)
	// __complete writes to cobra's own streams, not the cmdutil.Factory's.
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{cobra.ShellCompRequestCmd}, argv...))
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("__complete %v: %v (stderr %s)", argv, err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], ":") {
		t.Fatalf("no directive line in %q", out.String())
	}
	return lines[:len(lines)-1]
}

func TestCompletePCsAndGroups(t *testing.T) {
	srv := natstest.Run(t)
	js := natstest.Setup(t, srv.URL())
	ctx := context.Background()
	state, err := js.KeyValue(ctx, "agents_state")
	if err != nil {
		t.Fatal(err)
	}
	for _, pc := range []string{"dev-pc-2", "dev-pc-1", "Lab-01"} {
		if _, err := state.Put(ctx, pc, []byte(`{"pc_id":"`+pc+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	groups, err := js.KeyValue(ctx, "agent_groups")
	if err != nil {
		t.Fatal(err)
	}
	for pc, row := range map[string]string{
		"dev-pc-1": `{"groups":["canary","wave1"]}`,
		"dev-pc-2": `{"groups":["wave1","wave2"]}`,
		"Lab-01":   `not json`,
	} {
		if _, err := groups.Put(ctx, pc, []byte(row)); err != nil {
			t.Fatal(err)
		}
	}

	// The broker comes from the environment, as in a user's shell: the root's
	// pre-run resolves the configuration before __complete parses -s.
	t.Setenv("KANADE_NATS_URL", srv.URL())
	tests := []struct {
		name string
		argv []string
		want string
	}{
		{"every pc", []string{"probe", ""}, "Lab-01,dev-pc-1,dev-pc-2"},
		{"prefix", []string{"probe", "dev-"}, "dev-pc-1,dev-pc-2"},
		{"case-sensitive", []string{"probe", "lab"}, ""},
		{"second argument", []string{"probe", "dev-pc-1", ""}, ""},
		{"groups", []string{"probe", "--group", ""}, "canary,wave1,wave2"},
		{"group prefix", []string{"probe", "--group", "wa"}, "wave1,wave2"},
		{"pc flag after an argument", []string{"probe", "0.38.3", "--pc", "dev-pc-"}, "dev-pc-1,dev-pc-2"},
		{"pc then groups: pc", []string{"membership", "L"}, "Lab-01"},
		{"pc then groups: group", []string{"membership", "dev-pc-1", "c"}, "canary"},
		{"pc then groups: more groups", []string{"membership", "dev-pc-1", "canary", "w"}, "wave1,wave2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := strings.Join(completeArgv(t, tt.argv...), ","); got != tt.want {
				t.Errorf("completions = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestCompletePCsBrokerDown: with no broker, completion offers nothing and
// returns promptly instead of failing or hanging the shell.
func TestCompletePCsBrokerDown(t *testing.T) {
	t.Setenv("KANADE_NATS_URL", "nats://127.0.0.1:"+itoa(natstest.FreePort(t)))
	start := time.Now()
	if got := completeArgv(t, "probe", ""); len(got) != 0 {
		t.Errorf("completions with no broker = %q, want none", got)
	}
	if d := time.Since(start); d > completionTimeout+time.Second {
		t.Errorf("completion took %v with no broker, want at most about %v", d, completionTimeout)
	}
}

// TestCompletePCsSilentBroker: a broker address that accepts connections but
// never answers would hold nats.go for the whole --timeout; completion gives
// up after completionTimeout instead.
func TestCompletePCsSilentBroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	t.Setenv("KANADE_NATS_URL", "nats://"+ln.Addr().String())
	t.Setenv("KANADE_TIMEOUT", "30s")
	start := time.Now()
	if got := completeArgv(t, "probe", ""); len(got) != 0 {
		t.Errorf("completions from a silent broker = %q, want none", got)
	}
	if d := time.Since(start); d < completionTimeout || d > completionTimeout+2*time.Second {
		t.Errorf("completion took %v against a silent broker, want about %v", d, completionTimeout)
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for n >= 10 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	i--
	b[i] = byte('0' + n)
	return string(b[i:])
}
