package runner

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestStagePowerShell(t *testing.T) {
	dir := tempDir(t)
	script := "Write-Output 'héllo'\nexit 3\n"
	path, cleanup, err := stagePowerShell(dir, script)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(path, ".ps1") {
		t.Fatalf("staged %s, want a .ps1", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// BOM, then the prelude on the script's own first line so PowerShell's
	// line numbers match the operator's script.
	if want := "\xEF\xBB\xBF" + psPrelude + script; string(b) != want {
		t.Fatalf("content %q, want %q", b, want)
	}
	cleanup()
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("left behind after cleanup: %v", left)
	}
}

func TestStagePowerShellHeaderUsesLauncher(t *testing.T) {
	dir := tempDir(t)
	script := "<# .SYNOPSIS demo #>\n[CmdletBinding()]\nparam([string]$Name = 'x')\nWrite-Output $Name\n"
	path, cleanup, err := stagePowerShell(dir, script)
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("want launcher + script, got %v", entries)
	}
	launcher, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var user string
	for _, e := range entries {
		p := dir + string(os.PathSeparator) + e.Name()
		if p != path {
			user = p
		}
		if fi, _ := e.Info(); runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
	if !strings.HasPrefix(string(launcher), "\xEF\xBB\xBF"+psPrelude) ||
		!strings.Contains(string(launcher), "& '"+user+"' @args\n") ||
		!strings.HasSuffix(string(launcher), "exit $LASTEXITCODE\n") {
		t.Fatalf("launcher %q does not run %s", launcher, user)
	}
	b, _ := os.ReadFile(user)
	if string(b) != "\xEF\xBB\xBF"+script {
		t.Fatalf("user script %q changed", b)
	}
	cleanup()
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("left behind after cleanup: %v", left)
	}
}

func TestNeedsOwnFirstLine(t *testing.T) {
	tests := []struct {
		script string
		want   bool
	}{
		{"Write-Output hi", false},
		{"# a comment\nWrite-Output hi", false},
		{"[Console]::WriteLine('hi')", false},
		{"[string]$x = 'a'\n$x", false},
		{"$param = 1", false},
		{"Param-Thing", false},
		{"param($a)", true},
		{"PARAM (\n $a\n)", true},
		{"\n\n  # help\n<# .SYNOPSIS\n x #>\nparam()", true},
		{"[CmdletBinding()]\nparam()", true},
		{"[CmdletBinding(SupportsShouldProcess=$true)]\n[OutputType('x]')]\nParam()", true},
		{"using namespace System.IO\nWrite-Output hi", true},
		{"#Requires -Version 5.1\nWrite-Output hi", true},
		{"Write-Output hi\n#requires -RunAsAdministrator", false},
		{"\uFEFFparam()", true},
	}
	for _, tt := range tests {
		if got := needsOwnFirstLine(tt.script); got != tt.want {
			t.Errorf("needsOwnFirstLine(%q) = %v, want %v", tt.script, got, tt.want)
		}
	}
}

func TestExpandCwd(t *testing.T) {
	env := map[string]string{"USERPROFILE": `C:\Users\bob`, "APP": "app"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	home := func() (string, error) { return "/home/bob", nil }
	tests := []struct {
		raw     string
		percent bool
		want    string
	}{
		{"/srv/x", false, "/srv/x"},
		{"~", false, "/home/bob"},
		{"~/work", false, "/home/bob/work"},
		{"~bob", false, "~bob"},
		{"%USERPROFILE%", false, "%USERPROFILE%"},
		{`%USERPROFILE%\src`, true, `C:\Users\bob\src`},
		{`%APP%-%APP%`, true, "app-app"},
		{`%NOPE%\x`, true, `%NOPE%\x`},
		{`100%`, true, `100%`},
		{`50%%APP%`, true, `50%app`},
		{`%%`, true, `%%`},
	}
	for _, tt := range tests {
		got, err := expandCwd(tt.raw, tt.percent, home, lookup)
		if strings.HasPrefix(tt.raw, "~") && tt.raw != "~bob" {
			// "~" joins with filepath.Join: \home\bob\work on Windows.
			tt.want = filepath.FromSlash(tt.want)
		}
		if err != nil || got != tt.want {
			t.Errorf("expandCwd(%q, %v) = %q, %v; want %q", tt.raw, tt.percent, got, err, tt.want)
		}
	}
}
