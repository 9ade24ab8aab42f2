package runner

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

// TestCmdCommandLine: the temp file's path sits inside a quote pair that /S
// makes cmd keep, whatever the path holds, inside the outer pair /S strips.
func TestCmdCommandLine(t *testing.T) {
	tests := []struct{ path, want string }{
		{`C:\Windows\Temp\kanade-1.cmd`, `cmd /D /Q /S /C ""C:\Windows\Temp\kanade-1.cmd""`},
		{`C:\Users\Ann Lee\AppData\Local\Temp\kanade-2.cmd`,
			`cmd /D /Q /S /C ""C:\Users\Ann Lee\AppData\Local\Temp\kanade-2.cmd""`},
		{`C:\a&b (x)\kanade-3.cmd`, `cmd /D /Q /S /C ""C:\a&b (x)\kanade-3.cmd""`},
	}
	for _, tt := range tests {
		if got := cmdLine(tt.path); got != tt.want {
			t.Errorf("cmdLine(%q) = %s, want %s", tt.path, got, tt.want)
		}
		want := []string{"cmd", "/D", "/Q", "/S", "/C", `"` + tt.path + `"`}
		if got := cmdArgs(tt.path); strings.Join(got, "\x00") != strings.Join(want, "\x00") {
			t.Errorf("cmdArgs(%q) = %q, want %q", tt.path, got, want)
		}
	}
}

func TestEncodeBatch(t *testing.T) {
	tests := []struct {
		name   string
		script string
		cp     uint32
		want   string
	}{
		{"one line gets a CRLF", "echo hi", 437, "echo hi\r\n"},
		{"LF lines become CRLF, every line kept", "echo l1\necho l2\nexit /b 4\n", 437, "echo l1\r\necho l2\r\nexit /b 4\r\n"},
		{"CRLF stays CRLF", "echo l1\r\necho l2\r\n", 437, "echo l1\r\necho l2\r\n"},
		{"blank lines kept", "echo a\n\n\necho b", 437, "echo a\r\n\r\n\r\necho b\r\n"},
		{"BOM dropped", "\uFEFFecho hi\n", 437, "echo hi\r\n"},
		{"quoted path kept as written", `"C:\Program Files\Kanade Test\echoargs.cmd" "hello world"`, 437,
			"\"C:\\Program Files\\Kanade Test\\echoargs.cmd\" \"hello world\"\r\n"},
		{"OEM 437", "echo héllo wörld", 437, "echo h\x82llo w\x94rld\r\n"},
		{"OEM 850", "echo Ørsted ©", 850, "echo \x9drsted \xb8\r\n"},
		{"OEM 932", "echo 日本", 932, "echo \x93\xfa\x96\x7b\r\n"},
		{"UTF-8 OEM page", "echo 日本", 65001, "echo 日本\r\n"},
		{"after chcp 65001 the file is UTF-8", "echo é\nchcp 65001 >nul\necho é 日本\n", 437,
			"echo \x82\r\nchcp 65001 >nul\r\necho é 日本\r\n"},
		{"@chcp.com and upper case count", "@CHCP.COM 65001>nul\necho 日本", 437, "@CHCP.COM 65001>nul\r\necho 日本\r\n"},
		{"chcp back to 850", "chcp 65001\necho é\nchcp 850\necho é", 437, "chcp 65001\r\necho é\r\nchcp 850\r\necho \x82\r\n"},
		{"empty script", "", 437, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := encodeBatch(tt.script, tt.cp)
			if err != nil || string(got) != tt.want {
				t.Fatalf("encodeBatch(%q, %d) = %q, %v; want %q", tt.script, tt.cp, got, err, tt.want)
			}
		})
	}
}

// TestEncodeBatchUnrepresentable: a character the code page cannot hold is
// an error naming it and its line, not a '?' (a wildcard to del).
func TestEncodeBatchUnrepresentable(t *testing.T) {
	tests := []struct {
		script string
		cp     uint32
		want   string
	}{
		{"echo ok\ndel 日本.txt", 437, "line 2: '日' cannot be written in code page 437, the one cmd reads this line in; " +
			"put `chcp 65001 >nul` on a line before it, or use powershell"},
		{"echo ü", 857, "line 1: the script has non-ASCII text, and code page 857, the one cmd reads this line in, " +
			"is not one the runner can convert to; put `chcp 65001 >nul` on a line before it, or use powershell"},
	}
	for _, tt := range tests {
		if got, err := encodeBatch(tt.script, tt.cp); err == nil || err.Error() != tt.want {
			t.Errorf("encodeBatch(%q, %d) = %q, %v; want error %q", tt.script, tt.cp, got, err, tt.want)
		}
	}
	if got, err := encodeBatch("echo plain ascii", 857); err != nil || string(got) != "echo plain ascii\r\n" {
		t.Errorf("ASCII under a page without a table: %q, %v", got, err)
	}
}

func TestStageCmd(t *testing.T) {
	dir := filepath.Join(tempDir(t), "not yet")
	path, cleanup, err := stageCmd(dir, "echo l1\necho l2\nexit /b 4", 437)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(path) != dir || !strings.HasSuffix(path, ".cmd") {
		t.Fatalf("staged %s, want a .cmd in %s", path, dir)
	}
	if fi, err := os.Stat(path); err != nil || runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Fatalf("stat %s: %v, %v; want mode 0600", path, fi, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "echo l1\r\necho l2\r\nexit /b 4\r\n" {
		t.Fatalf("content %q", b)
	}
	cleanup()
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("left behind after cleanup: %v", left)
	}

	// A script that cannot be encoded writes nothing.
	if _, _, err := stageCmd(dir, "echo 日本", 437); err == nil {
		t.Fatal("staged a script code page 437 cannot hold")
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("left behind after a refused script: %v", left)
	}
}

// TestBuildCommandCmd: a cmd script becomes a temp .cmd file run by the
// command line cmdLine builds, decoded from the OEM code page, and cleanup
// removes the file.
func TestBuildCommandCmd(t *testing.T) {
	dir := tempDir(t)
	id, err := newIdentity("")
	if err != nil {
		t.Fatal(err)
	}
	defer id.close()
	c, cleanup, err := buildCommand(Spec{Shell: core.ShellCmd, Script: strings.Repeat("rem padding\n", 2000) + "exit /b 4", TempDir: dir}, id)
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("want one staged file, got %v", entries)
	}
	path := filepath.Join(dir, entries[0].Name())
	if c.program != "cmd" || c.cmdLine != cmdLine(path) || strings.Join(c.args, "\x00") != strings.Join(cmdArgs(path), "\x00") {
		t.Fatalf("command %+v, want %s", c, cmdLine(path))
	}
	if len(c.cmdLine) > 300 {
		t.Fatalf("the script leaked into the command line (%d chars)", len(c.cmdLine))
	}
	if c.decode == nil || c.decode([]byte("h\x82llo\r\n")) != "héllo\r\n" {
		t.Fatalf("output is not decoded from code page 437")
	}
	cleanup()
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("left behind after cleanup: %v", left)
	}

	res := Run(context.Background(), Spec{Shell: core.ShellCmd, Script: "echo 日本", Timeout: time.Minute, TempDir: dir}, nil)
	if want := "stage the script for cmd: line 1: '日' cannot be written in code page 437"; res.ExitCode != -1 || !strings.HasPrefix(res.Stderr, want) {
		t.Fatalf("unencodable script: exit %d stderr %q, want -1 and %q…", res.ExitCode, res.Stderr, want)
	}
}

func TestConsoleDecoder(t *testing.T) {
	tests := []struct {
		name string
		cp   uint32
		in   string
		want string
	}{
		{"ASCII", 437, "hello\r\n", "hello\r\n"},
		{"OEM 437", 437, "h\x82llo w\x94rld\r\n", "héllo wörld\r\n"},
		{"OEM 850", 850, "\x9drsted\r\n", "Ørsted\r\n"},
		{"OEM 932", 932, "\x93\xfa\x96\x7b\r\n", "日本\r\n"},
		{"UTF-8 after chcp 65001 stays", 437, "grüße 日本\r\n", "grüße 日本\r\n"},
		{"mixed: OEM line, then UTF-8 lines", 437, "h\x82llo\r\ngrüße\r\n日本", "héllo\r\ngrüße\r\n日本"},
		{"box drawing", 437, "\xc9\xcd\xbb\r\n", "╔═╗\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := consoleDecoder(tt.cp)([]byte(tt.in)); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	for _, cp := range []uint32{65001, 857, 0} {
		if consoleDecoder(cp) != nil {
			t.Errorf("consoleDecoder(%d) is not nil: output would be converted from a page it is not in", cp)
		}
	}
}

// TestCaptureDecode: a capture with a decoder uses it on both sides of a
// cut.
func TestCaptureDecode(t *testing.T) {
	c := newCapture(9)
	c.decode = consoleDecoder(437)
	c.Write([]byte("\x82\x82\x82\x82\x82\x82" + "xxxx" + "\x94\x94\x94"))
	if got, want := c.String(), "éééééé"+truncationMarker(4, 6, 3, 13)+"ööö"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestQuotePath: a cwd error shows the path as written.
func TestQuotePath(t *testing.T) {
	tests := []struct{ in, want string }{
		{`C:\nope`, `"C:\nope"`},
		{`C:\Program Files\x`, `"C:\Program Files\x"`},
		{"/srv/x", `"/srv/x"`},
		{"a\"b", `"a\"b"`},
		{"a\nb", `"a\nb"`},
	}
	for _, tt := range tests {
		if got := quotePath(tt.in); got != tt.want {
			t.Errorf("quotePath(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestBuildCommandSh: an ordinary sh script runs inline as SPEC §6.5 says
// (/bin/sh -c, no file written on the command's path); one longer than a
// single argument may be runs from a temp file that cleanup removes.
func TestBuildCommandSh(t *testing.T) {
	dir := tempDir(t)
	id, err := newIdentity("")
	if err != nil {
		t.Fatal(err)
	}
	defer id.close()
	short := "echo hi"
	c, cleanup, err := buildCommand(Spec{Shell: core.ShellSh, Script: short, TempDir: dir}, id)
	if err != nil {
		t.Fatal(err)
	}
	cleanup()
	if strings.Join(c.args, " ") != "/bin/sh -c echo hi" {
		t.Fatalf("short script: args %q, want /bin/sh -c", c.args)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a short script wrote %v", entries)
	}
	long := strings.Repeat("true\n", shInlineMax/5+1)
	c, cleanup, err = buildCommand(Spec{Shell: core.ShellSh, Script: long, TempDir: dir}, id)
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || len(c.args) != 2 || c.args[1] != filepath.Join(dir, entries[0].Name()) {
		t.Fatalf("long script: args %q, staged %v", c.args, entries)
	}
	cleanup()
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("cleanup left %v", left)
	}
}
