package service

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent/update"
)

func TestWindowsServiceSpec(t *testing.T) {
	spec := WindowsServiceSpec(InstallOptions{
		ExePath:    `C:\Program Files\Kanade\kanade.exe`,
		ConfigPath: `C:\ProgramData\Kanade\config\agent.toml`,
	})
	want := `"C:\Program Files\Kanade\kanade.exe" agent --config "C:\ProgramData\Kanade\config\agent.toml"`
	if spec.BinaryPathName != want {
		t.Errorf("command line\n got %s\nwant %s", spec.BinaryPathName, want)
	}
	if spec.Name != "KanadeAgent" || spec.Account != "LocalSystem" || !spec.AutoStart {
		t.Errorf("identity: %+v", spec)
	}
	if len(spec.RestartDelays) != 3 {
		t.Fatalf("recovery actions = %v, want 3", spec.RestartDelays)
	}
	for _, d := range spec.RestartDelays {
		if d != 5*time.Second {
			t.Errorf("restart delay %v, want 5s", d)
		}
	}
	if spec.ResetPeriod != 24*time.Hour || !spec.RecoveryOnNonCrashFailures {
		t.Errorf("reset %v, non-crash %v", spec.ResetPeriod, spec.RecoveryOnNonCrashFailures)
	}
	// Without a config file the agent resolves its default.
	spec = WindowsServiceSpec(InstallOptions{ExePath: `C:\kanade\kanade.exe`})
	if spec.BinaryPathName != `"C:\kanade\kanade.exe" agent` {
		t.Errorf("no config: %s", spec.BinaryPathName)
	}
}

func TestWindowsQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{`C:\a b\k.exe`, `"C:\a b\k.exe"`},
		{`C:\dir\`, `"C:\dir\\"`},     // a trailing backslash must not escape the quote
		{`a"b`, `"a\"b"`},             // cannot be a Windows path, still quoted right
		{`C:\x\\"y`, `"C:\x\\\\\"y"`}, // backslashes before a quote are doubled
		{``, `""`},
	}
	for _, tt := range tests {
		if got := windowsQuote(tt.in); got != tt.want {
			t.Errorf("windowsQuote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestUnitFile(t *testing.T) {
	u := UnitFile(InstallOptions{ExePath: "/opt/kanade agent/kanade", ConfigPath: "/etc/kanade/agent%1$.toml"})
	for _, line := range []string{
		`ExecStart="/opt/kanade agent/kanade" agent --config "/etc/kanade/agent%%1$$.toml"`,
		"Restart=on-failure",
		"RestartSec=5",
		"StartLimitIntervalSec=0",
		"EnvironmentFile=-/etc/kanade/agent.env",
		"WantedBy=multi-user.target",
		"After=network-online.target",
	} {
		if !containsLine(u, line) {
			t.Errorf("unit lacks %q:\n%s", line, u)
		}
	}
	// 64 must stay a failure so systemd restarts the new build.
	if strings.Contains(u, "SuccessExitStatus") || strings.Contains(u, "RestartPreventExitStatus") {
		t.Errorf("unit treats some exit status as success:\n%s", u)
	}
	if strings.Contains(strings.ToLower(u), "token") && !strings.Contains(u, "EnvironmentFile") {
		t.Error("unit mentions a token")
	}
	u = UnitFile(InstallOptions{ExePath: "/usr/local/bin/kanade"})
	if !containsLine(u, `ExecStart="/usr/local/bin/kanade" agent`) {
		t.Errorf("no config:\n%s", u)
	}
}

func containsLine(text, line string) bool {
	for _, l := range strings.Split(text, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

func TestLaunchdPlist(t *testing.T) {
	p := LaunchdPlist(InstallOptions{ExePath: "/usr/local/bin/kanade", ConfigPath: "/etc/kanade/R&D <test>.toml"})
	// Well-formed, and the values read back as written.
	var doc struct {
		Dict struct {
			Inner []byte `xml:",innerxml"`
		} `xml:"dict"`
	}
	if err := xml.Unmarshal([]byte(p), &doc); err != nil {
		t.Fatalf("plist is not XML: %v\n%s", err, p)
	}
	args := plistArray(t, p, "ProgramArguments")
	want := []string{"/usr/local/bin/kanade", "agent", "--config", "/etc/kanade/R&D <test>.toml"}
	if fmt.Sprint(args) != fmt.Sprint(want) {
		t.Errorf("ProgramArguments = %q, want %q", args, want)
	}
	for _, frag := range []string{
		"<key>Label</key>\n\t<string>com.kanade.agent</string>",
		"<key>KeepAlive</key>\n\t<dict>\n\t\t<key>SuccessfulExit</key>\n\t\t<false/>",
		"<key>RunAtLoad</key>\n\t<true/>",
		"<key>ThrottleInterval</key>\n\t<integer>5</integer>",
	} {
		if !strings.Contains(p, frag) {
			t.Errorf("plist lacks %q:\n%s", frag, p)
		}
	}
}

// plistArray decodes the <array> of strings after <key>key</key>.
func plistArray(t *testing.T, p, key string) []string {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(p))
	var out []string
	state := 0 // 0 looking for key, 1 in key text, 2 key found, 3 in array
	var text strings.Builder
	for {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("array %s not found: %v", key, err)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			text.Reset()
			if tk.Name.Local == "array" && state == 2 {
				state = 3
			}
		case xml.CharData:
			text.Write(tk)
		case xml.EndElement:
			switch {
			case tk.Name.Local == "key" && text.String() == key:
				state = 2
			case tk.Name.Local == "string" && state == 3:
				out = append(out, text.String())
			case tk.Name.Local == "array" && state == 3:
				return out
			}
		}
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{context.Canceled, 0},
		{fmt.Errorf("agent: %w", context.Canceled), 0},
		{update.ErrRestartRequired, core.ExitCodeUpdate},
		{fmt.Errorf("self-update: %w", update.ErrRestartRequired), 64},
		{errors.New("config: bad toml"), 1},
	}
	for _, tt := range tests {
		if got := ExitCode(tt.err); got != tt.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestInstallOptionsValidate(t *testing.T) {
	isAbs := func(p string) bool { return strings.HasPrefix(p, "/") }
	for _, o := range []InstallOptions{{}, {ExePath: "kanade"}, {ExePath: "/k", ConfigPath: "agent.toml"}} {
		if o.validate(isAbs) == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if err := (InstallOptions{ExePath: "/k", ConfigPath: "/c"}).validate(isAbs); err != nil {
		t.Error(err)
	}
}

// TestServe drives the service protocol without Windows.
func TestServe(t *testing.T) {
	t.Run("stop request cancels and reports", func(t *testing.T) {
		var states []svcState
		stops := make(chan struct{})
		started := make(chan struct{})
		go func() { <-started; close(stops) }()
		err := serve(func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		}, stops, func(s svcState) { states = append(states, s) }, 5*time.Second)
		if err != nil {
			t.Errorf("err = %v, want nil after a requested stop", err)
		}
		if fmt.Sprint(states) != fmt.Sprint([]svcState{stateStartPending, stateRunning, stateStopPending}) {
			t.Errorf("states = %v", states)
		}
	})
	t.Run("self-update exit keeps its code", func(t *testing.T) {
		err := serve(func(context.Context) error {
			return fmt.Errorf("agent: %w", update.ErrRestartRequired)
		}, make(chan struct{}), func(svcState) {}, time.Second)
		if ExitCode(err) != 64 {
			t.Errorf("exit code %d (%v), want 64", ExitCode(err), err)
		}
	})
	t.Run("an agent that ignores the stop is abandoned", func(t *testing.T) {
		stops := make(chan struct{})
		close(stops)
		block := make(chan struct{})
		defer close(block)
		t0 := time.Now()
		err := serve(func(context.Context) error { <-block; return nil }, stops, func(svcState) {}, 50*time.Millisecond)
		if err == nil || ExitCode(err) != 1 || time.Since(t0) > 5*time.Second {
			t.Errorf("err = %v after %v", err, time.Since(t0))
		}
	})
	t.Run("panic becomes an error", func(t *testing.T) {
		err := serve(func(context.Context) error { panic("boom") }, make(chan struct{}), func(svcState) {}, time.Second)
		if err == nil || !strings.Contains(err.Error(), "boom") {
			t.Errorf("err = %v", err)
		}
	})
}
