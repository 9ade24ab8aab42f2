//go:build windows

package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf16"
	"unsafe"

	"golang.org/x/sys/windows"

	"github.com/kanadehq/kanade-go/internal/core"
)

// identity is who the script runs as: the agent itself (token 0), or a
// primary token for the active console session (run_as user / system_gui),
// together with the environment the script gets — that identity's, minus
// the variables withheldFromScripts names.
type identity struct {
	token windows.Token
	env   []string
}

// runAsUnsupported: every run_as value is supported on Windows.
func runAsUnsupported(string) (string, bool) { return "", false }

// newIdentity acquires the token for runAs (SPEC §6.5: run in the active
// console session).
func newIdentity(runAs string) (*identity, error) {
	if runAs != core.RunAsUser && runAs != core.RunAsSystemGUI {
		return &identity{env: scriptEnv(os.Environ())}, nil
	}
	tok, err := sessionToken(runAs)
	if err != nil {
		return nil, err
	}
	env, err := tok.Environ(false)
	if err != nil {
		tok.Close()
		return nil, fmt.Errorf("build the environment of the session user: %w", err)
	}
	return &identity{token: tok, env: scriptEnv(env)}, nil
}

// sessionToken returns a primary token in the active console session:
//
//   - user: the logged-on user's own token (WTSQueryUserToken; filtered
//     when the user is an admin under UAC). Needs the agent to run as
//     LocalSystem (SeTcbPrivilege).
//   - system_gui: a copy of the agent's own LocalSystem token moved into the
//     console session (SetTokenInformation TokenSessionId), so the script
//     keeps SYSTEM's rights but can show UI to the user — PsExec -i -s.
func sessionToken(runAs string) (windows.Token, error) {
	session := windows.WTSGetActiveConsoleSessionId()
	if session == 0xFFFFFFFF {
		return 0, errors.New("no active console session: nobody is logged on at the console")
	}
	if runAs == core.RunAsUser {
		var tok windows.Token
		if err := windows.WTSQueryUserToken(session, &tok); err != nil {
			return 0, fmt.Errorf("get the token of the user in console session %d "+
				"(no user logged on, or the agent is not running as LocalSystem): %w", session, err)
		}
		return tok, nil
	}
	var self windows.Token
	if err := windows.OpenProcessToken(windows.CurrentProcess(),
		windows.TOKEN_DUPLICATE|windows.TOKEN_QUERY|windows.TOKEN_ASSIGN_PRIMARY|
			windows.TOKEN_ADJUST_DEFAULT|windows.TOKEN_ADJUST_SESSIONID, &self); err != nil {
		return 0, fmt.Errorf("open the agent's token: %w", err)
	}
	defer self.Close()
	var dup windows.Token
	if err := windows.DuplicateTokenEx(self, windows.MAXIMUM_ALLOWED, nil,
		windows.SecurityImpersonation, windows.TokenPrimary, &dup); err != nil {
		return 0, fmt.Errorf("duplicate the agent's token: %w", err)
	}
	if err := windows.SetTokenInformation(dup, windows.TokenSessionId,
		(*byte)(unsafe.Pointer(&session)), uint32(unsafe.Sizeof(session))); err != nil {
		dup.Close()
		return 0, fmt.Errorf("move the token into console session %d (the agent must run as LocalSystem): %w",
			session, err)
	}
	return dup, nil
}

// home is the profile directory of the identity: "~" in cwd means the
// session user's home for run_as user, not the service account's.
func (id *identity) home() (string, error) {
	if id.token == 0 {
		return os.UserHomeDir()
	}
	return id.token.GetUserProfileDirectory()
}

// lookupEnv finds key, case-insensitively as Windows does, in the
// script's environment, so %VAR% in cwd cannot reach a withheld variable.
func (id *identity) lookupEnv(key string) (string, bool) {
	for _, kv := range id.env {
		// Entries like "=C:=C:\" are per-drive directories, not variables.
		k, v, ok := strings.Cut(kv, "=")
		if ok && k != "" && strings.EqualFold(k, key) {
			return v, true
		}
	}
	return "", false
}

// envBlock is the script's environment as CreateProcess wants it:
// NUL-separated UTF-16 strings ending in an extra NUL. It is never nil: a
// nil block would make the child inherit the agent's whole environment,
// withheld variables included.
func (id *identity) envBlock() *uint16 {
	var block []uint16
	for _, kv := range id.env {
		if strings.IndexByte(kv, 0) >= 0 {
			continue
		}
		block = append(block, utf16.Encode([]rune(kv))...)
		block = append(block, 0)
	}
	if len(block) == 0 {
		// An empty block is still two NULs: an empty string, then the end.
		block = append(block, 0)
	}
	block = append(block, 0)
	return &block[0]
}

// scriptDir is where temp scripts go when Spec.TempDir is empty. A script
// run as the session user must be readable by that user: SYSTEM's %TEMP%
// (C:\Windows\Temp) does not let users read what SYSTEM wrote, while files
// under %ProgramData% inherit "Users: read & execute".
func (id *identity) scriptDir() string {
	if id.token == 0 {
		return os.TempDir()
	}
	base := os.Getenv("ProgramData")
	if base == "" {
		base = `C:\ProgramData`
	}
	return filepath.Join(base, "Kanade", "agent-scripts")
}

func (id *identity) close() {
	if id.token != 0 {
		id.token.Close()
		id.token = 0
	}
}
