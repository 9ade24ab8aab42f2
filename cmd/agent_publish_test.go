package cmd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// tinyAgentSrc is a miniature of this module: same module path and the same
// core.Version variable, so its build info looks exactly like a release
// build's, and it builds in a second.
var tinyAgentSrc = map[string]string{
	"go.mod":                "module github.com/kanadehq/kanade-go\n\ngo 1.22\n",
	"internal/core/core.go": "package core\n\nvar Version = \"\"\n",
	"main.go": `package main

import (
	"fmt"

	"github.com/kanadehq/kanade-go/internal/core"
)

func main() { fmt.Printf("{\"version\":%q}\n", core.Version) }
`,
}

// buildTinyAgent builds the miniature for goos/goarch, stamped with version
// ("" for none), optionally with -trimpath, into the test's temp dir (the go build cache keeps repeats
// fast).
func buildTinyAgent(t *testing.T, goos, goarch, version string, trimpath bool) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go toolchain to build a test binary")
	}
	dir := t.TempDir()
	for name, body := range tinyAgentSrc {
		p := filepath.Join(dir, "src", filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "kanade-"+goos+"-"+goarch)
	args := []string{"build", "-o", out}
	if trimpath {
		args = append(args, "-trimpath") // as goreleaser builds releases
	}
	if version != "" {
		args = append(args, "-ldflags", "-s -w -X "+versionLDFlag+version)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Join(dir, "src")
	cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build tiny agent %s/%s: %v\n%s", goos, goarch, err, b)
	}
	return out
}

func TestAgentPublishArgv(t *testing.T) {
	var got *AgentPublishOptions
	runF := func(_ context.Context, o *AgentPublishOptions) error { got = o; return nil }
	if err := opExec(NewAgentPublishCmd(opArgvFactory(), runF), "--version", "0.39.0", "--os", "macos", "--arch", "arm64", "--json", "dist/kanade"); err != nil {
		t.Fatal(err)
	}
	if got.File != "dist/kanade" || got.Version != "0.39.0" || got.OS != "darwin" || got.Arch != "arm64" || !got.JSON {
		t.Fatalf("opts = %+v", got)
	}
	wantUsage(t, opExec(NewAgentPublishCmd(opArgvFactory(), runF), "--version", "1.0 beta", "f"), "--version")
	wantUsage(t, opExec(NewAgentPublishCmd(opArgvFactory(), runF), "--version", "../1", "f"), "--version")
	wantUsage(t, opExec(NewAgentPublishCmd(opArgvFactory(), runF), "--os", "plan9", "f"), "--os")
	wantUsage(t, opExec(NewAgentPublishCmd(opArgvFactory(), runF), "--arch", "386", "f"), "--arch")
	if err := opExec(NewAgentPublishCmd(opArgvFactory(), runF)); err == nil {
		t.Fatal("want an error without FILE")
	}
}

func TestInspectAgentBinary(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name         string
		goos, goarch string
		stamp        string
		trimpath     bool
		wantVersion  string
		wantKnown    bool
	}{
		{"linux stamped", "linux", "amd64", "0.39.0", false, "0.39.0", true},
		{"windows stamped", "windows", "amd64", "0.39.0-rc.1", false, "0.39.0-rc.1", true},
		{"unstamped dev build", "linux", "amd64", "", false, "", true},
		// -trimpath hides -ldflags: a build for this machine is run instead.
		{"release build, runnable here", runtime.GOOS, runtime.GOARCH, "0.40.0", true, "0.40.0", true},
		{"release build for windows", "windows", "amd64", "0.40.0", true, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := inspectAgentBinary(ctx, buildTinyAgent(t, tt.goos, tt.goarch, tt.stamp, tt.trimpath))
			if err != nil {
				t.Fatal(err)
			}
			if b.GOOS != tt.goos || b.GOARCH != tt.goarch || !b.Kanade || b.Version != tt.wantVersion || b.VersionKnown != tt.wantKnown {
				t.Errorf("got %+v, want %s/%s version %q known %v", b, tt.goos, tt.goarch, tt.wantVersion, tt.wantKnown)
			}
		})
	}
	script := filepath.Join(t.TempDir(), "agent.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho 0.39.0\n"), 0o755)
	if _, err := inspectAgentBinary(ctx, script); err == nil || !strings.Contains(err.Error(), "not a Windows (PE), Linux (ELF) or macOS (Mach-O) executable") {
		t.Errorf("script: %v", err)
	}
}

// TestBinaryPlatformHeaders reads hand-made minimal headers of the formats
// and machines not built above.
func TestBinaryPlatformHeaders(t *testing.T) {
	le := binary.LittleEndian
	machO := func(cpu uint32) []byte {
		b := make([]byte, 32)
		le.PutUint32(b[0:], 0xfeedfacf) // MH_MAGIC_64
		le.PutUint32(b[4:], cpu)
		le.PutUint32(b[12:], 2) // MH_EXECUTE
		return b
	}
	elf64 := func(machine uint16) []byte {
		b := make([]byte, 64)
		copy(b, "\x7fELF")
		b[4], b[5], b[6] = 2, 1, 1 // 64-bit, little endian, version 1
		le.PutUint16(b[16:], 2)    // ET_EXEC
		le.PutUint16(b[18:], machine)
		le.PutUint32(b[20:], 1)
		le.PutUint16(b[52:], 64)
		return b
	}
	peFile := func(machine uint16) []byte {
		b := make([]byte, 0x40+4+20+64) // padding: the reader looks past the header
		copy(b, "MZ")
		le.PutUint32(b[0x3c:], 0x40)
		copy(b[0x40:], "PE\x00\x00")
		le.PutUint16(b[0x44:], machine)
		return b
	}
	tests := []struct {
		name       string
		data       []byte
		goos, arch string
		wantErr    string
	}{
		{"macOS arm64", machO(0x0100000c), "darwin", "arm64", ""},
		{"macOS amd64", machO(0x01000007), "darwin", "amd64", ""},
		{"macOS ppc", machO(18), "", "", "only amd64 and arm64"},
		{"linux arm64", elf64(183), "linux", "arm64", ""},
		{"linux amd64", elf64(62), "linux", "amd64", ""},
		{"linux 386", elf64(3), "", "", "only amd64 and arm64"},
		{"windows arm64", peFile(0xaa64), "windows", "arm64", ""},
		{"windows 386", peFile(0x14c), "", "", "only amd64 and arm64"},
	}
	for _, tt := range tests {
		p := filepath.Join(t.TempDir(), "bin")
		os.WriteFile(p, tt.data, 0o755)
		goos, arch, err := binaryPlatform(p)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: err = %v, want %q", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || goos != tt.goos || arch != tt.arch {
			t.Errorf("%s: got %s/%s, %v", tt.name, goos, arch, err)
		}
	}
}

func TestResolveRelease(t *testing.T) {
	kanade := agentBinary{GOOS: "linux", GOARCH: "amd64", Version: "0.39.0", VersionKnown: true, Kanade: true, Module: kanadeModule}
	devBuild := agentBinary{GOOS: "linux", GOARCH: "amd64", VersionKnown: true, Kanade: true, Module: kanadeModule}
	hidden := agentBinary{GOOS: "windows", GOARCH: "amd64", Kanade: true, Module: kanadeModule}
	upstream := agentBinary{GOOS: "windows", GOARCH: "amd64"} // a Rust build: no Go build info
	universal := agentBinary{GOOS: "darwin"}

	check := func(b agentBinary, o AgentPublishOptions, wantOS, wantArch, wantVer, wantErr string) {
		t.Helper()
		goos, goarch, v, _, err := resolveRelease("f", b, &o)
		if wantErr != "" {
			wantUsage(t, err, wantErr)
			return
		}
		if err != nil || goos != wantOS || goarch != wantArch || v != wantVer {
			t.Errorf("got %s/%s %s %v, want %s/%s %s", goos, goarch, v, err, wantOS, wantArch, wantVer)
		}
	}
	check(kanade, AgentPublishOptions{}, "linux", "amd64", "0.39.0", "")
	check(kanade, AgentPublishOptions{Version: "0.39.0"}, "linux", "amd64", "0.39.0", "")
	check(kanade, AgentPublishOptions{Version: "0.40.0"}, "", "", "", "reports version 0.39.0 but --version says 0.40.0")
	check(kanade, AgentPublishOptions{OS: "windows"}, "", "", "", "is a linux binary but --os says windows")
	check(kanade, AgentPublishOptions{Arch: "arm64"}, "", "", "", "--arch says arm64")
	check(devBuild, AgentPublishOptions{}, "", "", "", "carries no version")
	check(devBuild, AgentPublishOptions{Version: "0.39.0"}, "", "", "", "reports version 0.0.0-dev")
	check(hidden, AgentPublishOptions{}, "", "", "", "-trimpath build for another platform")
	check(hidden, AgentPublishOptions{Version: "0.40.0"}, "windows", "amd64", "0.40.0", "")
	check(upstream, AgentPublishOptions{}, "", "", "", "pass --version")
	check(upstream, AgentPublishOptions{Version: "0.38.1"}, "windows", "amd64", "0.38.1", "")
	check(universal, AgentPublishOptions{Version: "1.0.0"}, "", "", "", "pass --os and --arch")
	check(universal, AgentPublishOptions{Version: "1.0.0", Arch: "arm64"}, "darwin", "arm64", "1.0.0", "")
}

// publishEnv runs `kanade agent publish` against the env's broker.
func publishRun(e *opEnv, tty bool, args ...string) error {
	f := &cmdutil.Factory{IO: e.io(tty), JetStream: e.jsF(), Now: e.nowF()}
	return opExec(NewAgentPublishCmd(f, nil), args...)
}

func objectBytes(t *testing.T, js jetstream.JetStream, key string) ([]byte, *jetstream.ObjectInfo) {
	t.Helper()
	store, err := js.ObjectStore(context.Background(), core.ObjectAgentReleases)
	if err != nil {
		t.Fatal(err)
	}
	r, err := store.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := r.Info()
	return b, info
}

func TestAgentPublishRun(t *testing.T) {
	e := newOpEnv(t)
	linux := buildTinyAgent(t, "linux", "amd64", "0.39.0", false)
	want, _ := os.ReadFile(linux)
	sum := sha256.Sum256(want)

	if err := publishRun(e, false, "--json", linux); err != nil {
		t.Fatalf("%v\n%s", err, e.errOut)
	}
	var res AgentPublishResult
	if err := json.Unmarshal([]byte(e.out.String()), &res); err != nil {
		t.Fatalf("%v: %s", err, e.out)
	}
	if res.Version != "0.39.0" || res.OS != "linux" || res.Arch != "amd64" || res.Size != int64(len(want)) ||
		strings.Join(res.Keys, ",") != "0.39.0-linux-x86_64,0.39.0-linux-amd64" || res.SHA256 != hex.EncodeToString(sum[:]) || res.Bucket != "agent_releases" {
		t.Errorf("result = %+v", res)
	}
	// SPEC-2 §1: upstream's key too, the same bytes.
	if up, _ := objectBytes(t, e.js, "0.39.0-linux-x86_64"); !bytes.Equal(up, want) {
		t.Errorf("upstream key 0.39.0-linux-x86_64 holds %d bytes, want the release", len(up))
	}
	got, info := objectBytes(t, e.js, "0.39.0-linux-amd64")
	if !bytes.Equal(got, want) || info.Digest != res.Digest || !strings.HasPrefix(res.Digest, "SHA-256=") {
		t.Errorf("stored %d bytes digest %s; result digest %s", len(got), info.Digest, res.Digest)
	}
	if info.Metadata["version"] != "0.39.0" || info.Metadata["os"] != "linux" {
		t.Errorf("metadata = %v", info.Metadata)
	}
	if !strings.Contains(e.errOut.String(), "uploading 0.39.0-linux-amd64") || !strings.Contains(e.errOut.String(), "✓ uploaded 0.39.0-linux-amd64") {
		t.Errorf("progress on stderr:\n%s", e.errOut)
	}

	// windows/amd64 also goes under the bare version, for upstream agents.
	win := buildTinyAgent(t, "windows", "amd64", "0.39.0", false)
	if err := publishRun(e, false, win); err != nil {
		t.Fatalf("%v\n%s", err, e.errOut)
	}
	out := e.out.String()
	for _, line := range []string{"version   0.39.0", "platform  windows/amd64", "key       agent_releases/0.39.0-windows-amd64", "key       agent_releases/0.39.0"} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("output lacks %q:\n%s", line, out)
		}
	}
	wb, _ := os.ReadFile(win)
	for _, key := range []string{"0.39.0-windows-amd64", "0.39.0"} {
		if got, _ := objectBytes(t, e.js, key); !bytes.Equal(got, wb) {
			t.Errorf("%s holds %d bytes, want the windows build", key, len(got))
		}
	}
	if !strings.Contains(e.errOut.String(), "next: kanade agent rollout 0.39.0") {
		t.Errorf("no next step on stderr:\n%s", e.errOut)
	}

	// A kanade build whose version disagrees with --version is refused
	// before anything is uploaded.
	err := publishRun(e, false, "--version", "0.40.0", linux)
	wantUsage(t, err, "--version says 0.40.0")
	store, _ := e.js.ObjectStore(context.Background(), core.ObjectAgentReleases)
	if _, err := store.GetInfo(context.Background(), "0.40.0-linux-amd64"); err == nil {
		t.Error("a refused publish uploaded something")
	}
}

func TestAgentPublishNoStore(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.JetStream(t, srv.URL())
	var out, errOut bytes.Buffer
	f := &cmdutil.Factory{IO: cmdutil.TestIO(nil, &out, &errOut, false), JetStream: func(context.Context) (jetstream.JetStream, error) { return js, nil }}
	err := opExec(NewAgentPublishCmd(f, nil), buildTinyAgent(t, "linux", "amd64", "0.39.0", false))
	wantHint(t, err, "kanade jetstream setup")
}
