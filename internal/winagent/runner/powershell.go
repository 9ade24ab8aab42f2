package runner

import (
	"strings"
)

// utf8BOM makes Windows PowerShell 5.1 read a script as UTF-8 rather than the
// ANSI code page, which would mangle any non-ASCII character in it.
const utf8BOM = "\uFEFF"

// psPrelude forces PowerShell's output to UTF-8 so the runner decodes what the
// script printed, not CP932 or CP1252. The BOM-less UTF8Encoding matters:
// [Text.Encoding]::UTF8 would prefix text piped to native commands with a BOM.
const psPrelude = "[Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false; " +
	"$OutputEncoding = [Console]::OutputEncoding; "

// stagePowerShell writes script for `powershell -File` into dir (created if
// missing) and returns the file to run and a cleanup that removes every file
// it wrote. Files are created exclusively with owner-only permissions (0600)
// by the stager the sh path uses too.
//
// The prelude shares the script's first line, so line numbers in PowerShell's
// error messages still match the script the operator wrote. A script that
// must open with its own header — param(...) with or without attributes,
// `using`, or #requires on line 1 — cannot have anything before it, so it is
// staged unchanged and run from a small launcher that sets the encoding and
// calls it with `&`. The launcher then exits with $LASTEXITCODE, which it
// resets first: `exit N` in the script propagates, at the cost that a script
// ending normally right after a failing native command reports that
// command's code.
func stagePowerShell(dir, script string) (string, func(), error) {
	s := &stager{dir: dir}
	fail := func(err error) (string, func(), error) {
		s.cleanup()
		return "", func() {}, err
	}
	if !needsOwnFirstLine(script) {
		p, err := s.write("kanade-*.ps1", utf8BOM+psPrelude+script)
		if err != nil {
			return fail(err)
		}
		return p, s.cleanup, nil
	}
	user, err := s.write("kanade-*.ps1", utf8BOM+script)
	if err != nil {
		return fail(err)
	}
	launcher, err := s.write("kanade-launch-*.ps1", utf8BOM+psPrelude+"\n"+
		"$global:LASTEXITCODE = 0\n"+
		"& '"+strings.ReplaceAll(user, "'", "''")+"' @args\n"+
		"exit $LASTEXITCODE\n")
	if err != nil {
		return fail(err)
	}
	return launcher, s.cleanup, nil
}

// needsOwnFirstLine reports whether script starts (after blank space and
// comments) with something PowerShell only accepts at the very top — a
// param block, optionally behind attributes such as [CmdletBinding()], or a
// using statement — or has #requires on its first line.
func needsOwnFirstLine(script string) bool {
	s := strings.TrimPrefix(script, utf8BOM)
	if hasFoldPrefix(strings.TrimLeft(s, " \t"), "#requires") {
		return true
	}
	s = skipSpaceAndComments(s)
	if hasKeyword(s, "using") {
		return true
	}
	// Attributes: [Name(...)] possibly several, possibly spread over lines.
	for strings.HasPrefix(s, "[") {
		end := matchBracket(s)
		if end < 0 {
			return false
		}
		s = skipSpaceAndComments(s[end+1:])
	}
	return hasKeyword(s, "param")
}

// skipSpaceAndComments drops leading white space, # line comments and
// <# block comments #>.
func skipSpaceAndComments(s string) string {
	for {
		s = strings.TrimLeft(s, " \t\r\n")
		switch {
		case strings.HasPrefix(s, "<#"):
			end := strings.Index(s[2:], "#>")
			if end < 0 {
				return ""
			}
			s = s[2+end+2:]
		case strings.HasPrefix(s, "#"):
			end := strings.IndexByte(s, '\n')
			if end < 0 {
				return ""
			}
			s = s[end+1:]
		default:
			return s
		}
	}
}

// matchBracket returns the index of the ] closing the [ at s[0], honouring
// nesting and quoted strings, or -1.
func matchBracket(s string) int {
	depth := 0
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '[' || c == '(':
			depth++
		case c == ']' || c == ')':
			depth--
			if depth == 0 {
				if c == ']' {
					return i
				}
				return -1
			}
		}
	}
	return -1
}

// hasKeyword reports whether s starts with word (case-insensitive) followed
// by a non-identifier character.
func hasKeyword(s, word string) bool {
	if !hasFoldPrefix(s, word) {
		return false
	}
	if len(s) == len(word) {
		return true
	}
	c := s[len(word)]
	return !(c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z')
}

func hasFoldPrefix(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
