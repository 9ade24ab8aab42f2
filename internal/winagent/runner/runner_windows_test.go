package runner

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/windows"

	"github.com/kanadehq/kanade-go/internal/core"
)

// These run the real cmd.exe: on Windows, or under Wine
// (GOOS=windows go test -c, then wine runner.test.exe; scripts/wine-smoke.sh
// checks the same through the whole agent).

// onWine reports whether the test runs under Wine rather than Windows.
func onWine() bool {
	return windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}

func runCmd(t *testing.T, script string) Result {
	t.Helper()
	dir := tempDir(t)
	res := Run(context.Background(), Spec{Shell: core.ShellCmd, Script: script, Timeout: time.Minute, TempDir: dir}, nil)
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("temp scripts left behind: %v", left)
	}
	return res
}

func TestCmdRunsEveryLine(t *testing.T) {
	res := runCmd(t, "echo l1\necho l2\nexit /b 4\necho never")
	if res.ExitCode != 4 || res.Stdout != "l1\r\nl2\r\n" {
		t.Fatalf("exit %d stdout %q stderr %q; want 4 and both lines", res.ExitCode, res.Stdout, res.Stderr)
	}
}

func TestCmdQuotedProgramPath(t *testing.T) {
	dir := filepath.Join(tempDir(t), "Kanade Test")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(dir, "echoargs.cmd")
	if err := os.WriteFile(prog, []byte("@echo off\r\necho arg1=[%~1] arg2=[%~2]\r\nexit /b 7\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := runCmd(t, `"`+prog+`" "hello world" x`)
	if res.ExitCode != 7 || res.Stdout != "arg1=[hello world] arg2=[x]\r\n" {
		t.Fatalf("exit %d stdout %q stderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}
}

func TestCmdLongScript(t *testing.T) {
	var b strings.Builder
	b.WriteString("set n=0\n")
	lines := 0
	for b.Len() < 20000 {
		b.WriteString("set /a n+=1 >nul\n")
		lines++
	}
	b.WriteString("echo n=%n%\n")
	res := runCmd(t, b.String())
	if want := "n=" + strconv.Itoa(lines) + "\r\n"; res.ExitCode != 0 || res.Stdout != want {
		t.Fatalf("%d-byte script: exit %d stdout %q stderr %q, want %q", b.Len(), res.ExitCode, res.Stdout, res.Stderr, want)
	}
}

// TestCmdNonASCII: the file is written in the OEM code page, and output is
// decoded from it, or taken as UTF-8 once the script ran chcp 65001.
func TestCmdNonASCII(t *testing.T) {
	t.Logf("OEM code page %d", oemCodePage())
	if res := runCmd(t, "echo héllo wörld"); res.ExitCode != 0 || res.Stdout != "héllo wörld\r\n" {
		t.Errorf("OEM: exit %d stdout %q stderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}
	// Text read before chcp, printed after it: UTF-8 output.
	res := runCmd(t, "set \"w=grüße\"\necho %w%\nchcp 65001 >nul\necho %w%")
	if res.ExitCode != 0 || res.Stdout != "grüße\r\ngrüße\r\n" {
		t.Errorf("chcp 65001: exit %d stdout %q stderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}
}

// TestCmdChcpUTF8Script: after a chcp 65001 line, Windows' cmd reads the rest
// of the file as UTF-8, so text no OEM code page holds can be written there.
func TestCmdChcpUTF8Script(t *testing.T) {
	if onWine() {
		t.Skip("Wine's cmd reads a batch file in the OEM code page whatever chcp says (programs/cmd WCMD_fgets)")
	}
	res := runCmd(t, "echo héllo\nchcp 65001 >nul\necho grüße 日本")
	if res.ExitCode != 0 || res.Stdout != "héllo\r\ngrüße 日本\r\n" {
		t.Errorf("exit %d stdout %q stderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}
}

func TestCmdMissingCwd(t *testing.T) {
	res := Run(context.Background(), Spec{Shell: core.ShellCmd, Script: "echo hi", Timeout: time.Minute, Cwd: `C:\nope\kanade`}, nil)
	if want := `cwd "C:\nope\kanade" does not exist`; res.ExitCode != -1 || res.Stderr != want {
		t.Fatalf("exit %d stderr %q, want -1 %q", res.ExitCode, res.Stderr, want)
	}
}
