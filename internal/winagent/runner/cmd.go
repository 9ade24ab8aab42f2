package runner

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
)

// A cmd script runs from a temp batch file, never inline after `cmd /C`:
// cmd ends a /C command at its first newline, strips the quotes around a
// line that starts with a quoted path, and caps a command line at 8,191
// characters. A batch file runs every line, keeps quoting as written and is
// bounded only by MaxScript (a single line of it still by 8,191).
//
// Code pages. cmd reads a batch file as bytes in the console's code page,
// which for the fresh console a script gets is the OEM code page (437 on an
// en-US Windows, 850 in much of Western Europe, 932 in Japan; 65001 when
// "Use Unicode UTF-8 for worldwide language support" is on), and it writes
// its output to a pipe in that same code page. `chcp N` switches both for
// the rest of the run, and Windows' cmd reads every later line of the file
// in N. So the file is written in the OEM code page up to a line that runs
// `chcp N` and in N after it, and the output is decoded line by line: a
// line that is valid UTF-8 is taken as it is (ASCII, or text printed after
// chcp 65001), any other line is decoded from the OEM code page. (Wine's
// cmd reads a batch file in the OEM code page whatever chcp says, so there
// text written after a chcp line comes out garbled; its output does follow
// chcp.)

// cmdLine is the command line that runs the batch file at path (SPEC §6.5):
//
//	cmd /D /Q /S /C ""<path>""
//
// /D skips the AutoRun commands the registry may hold, which would run
// before every script and could print, chcp or cd; /Q turns echo off, as if
// the file started with `@echo off` (the script may `echo on`); /S makes cmd
// strip exactly the outer pair of quotes, so the quotes around the path
// survive whatever characters it holds. The file is run directly, not
// through `call`: `exit /b N` is cmd's exit code either way on Windows, but
// Wine's call turns any non-zero errorlevel into 1. Without `exit /b`, the
// exit code is the errorlevel the last command left.
func cmdLine(path string) string {
	return `cmd /D /Q /S /C ""` + path + `""`
}

// cmdArgs is cmdLine as argv; only the Windows start uses the raw line.
func cmdArgs(path string) []string {
	return []string{"cmd", "/D", "/Q", "/S", "/C", `"` + path + `"`}
}

// stageCmd writes script for cmd into dir (created if missing) as a .cmd
// file in the code page cmd reads it in (encodeBatch, starting from
// oemCP), and returns its path and a cleanup that removes it.
func stageCmd(dir, script string, oemCP uint32) (string, func(), error) {
	body, err := encodeBatch(script, oemCP)
	if err != nil {
		return "", func() {}, err
	}
	s := &stager{dir: dir}
	p, err := s.write("kanade-*.cmd", string(body))
	if err != nil {
		s.cleanup()
		return "", func() {}, err
	}
	return p, s.cleanup, nil
}

// chcpLine matches a line whose command is `chcp N` (optionally behind @,
// with redirections after it): from the next line on cmd reads the file in
// code page N.
var chcpLine = regexp.MustCompile(`(?i)^[\s@]*chcp(?:\.com)?\s+(\d+)\b`)

// encodeBatch turns script into the bytes of a batch file: a leading BOM
// dropped (cmd would take it for part of the first command), every line
// ended by CRLF (with bare LFs cmd's goto and call :label miss labels), and
// every line encoded in the code page cmd will read it in — cp at first,
// and after a line running `chcp N`, N. A character that code page cannot
// hold is an error naming it and its line: writing '?' instead would be a
// wildcard in a del or copy.
func encodeBatch(script string, cp uint32) ([]byte, error) {
	script = strings.TrimPrefix(script, utf8BOM)
	script = strings.ReplaceAll(script, "\r\n", "\n")
	lines := strings.Split(script, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1] // the script ended with a newline
	}
	out := make([]byte, 0, len(script)+len(lines)+16)
	for i, line := range lines {
		b, err := encodeLine(line, cp)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		out = append(append(out, b...), '\r', '\n')
		if m := chcpLine.FindStringSubmatch(line); m != nil {
			if n, err := strconv.ParseUint(m[1], 10, 32); err == nil {
				cp = uint32(n)
			}
		}
	}
	return out, nil
}

// encodeLine encodes one line in code page cp.
func encodeLine(line string, cp uint32) ([]byte, error) {
	if isASCII(line) || cp == cpUTF8 {
		return []byte(line), nil
	}
	enc := codePage(cp)
	if enc == nil {
		return nil, fmt.Errorf("the script has non-ASCII text, and code page %d, the one cmd reads this line in, "+
			"is not one the runner can convert to; put `chcp 65001 >nul` on a line before it, or use powershell", cp)
	}
	b, err := enc.NewEncoder().Bytes([]byte(line))
	if err == nil {
		return b, nil
	}
	bad := "a character"
	for _, r := range line {
		if _, err := enc.NewEncoder().String(string(r)); err != nil {
			bad = strconv.QuoteRune(r)
			break
		}
	}
	return nil, fmt.Errorf("%s cannot be written in code page %d, the one cmd reads this line in; "+
		"put `chcp 65001 >nul` on a line before it, or use powershell", bad, cp)
}

// cpUTF8 is Windows' code page number for UTF-8.
const cpUTF8 = 65001

// codePage returns the x/text encoding for a Windows code page number: the
// OEM pages of the usual Windows locales and the ANSI pages, nil for UTF-8
// and for pages x/text has no table for (737, 775, 857, 861, 864, 869 among
// the OEM ones). With nil, output is taken as UTF-8 and a script line in
// that code page must be ASCII.
func codePage(cp uint32) encoding.Encoding {
	switch cp {
	case 437:
		return charmap.CodePage437
	case 850:
		return charmap.CodePage850
	case 852:
		return charmap.CodePage852
	case 855:
		return charmap.CodePage855
	case 858:
		return charmap.CodePage858
	case 860:
		return charmap.CodePage860
	case 862:
		return charmap.CodePage862
	case 863:
		return charmap.CodePage863
	case 865:
		return charmap.CodePage865
	case 866:
		return charmap.CodePage866
	case 874:
		return charmap.Windows874
	case 932:
		return japanese.ShiftJIS
	case 936:
		return simplifiedchinese.GBK
	case 949:
		return korean.EUCKR // x/text's EUC-KR is the WHATWG one: Windows' 949
	case 950:
		return traditionalchinese.Big5
	case 1250:
		return charmap.Windows1250
	case 1251:
		return charmap.Windows1251
	case 1252:
		return charmap.Windows1252
	case 1253:
		return charmap.Windows1253
	case 1254:
		return charmap.Windows1254
	case 1255:
		return charmap.Windows1255
	case 1256:
		return charmap.Windows1256
	case 1257:
		return charmap.Windows1257
	case 1258:
		return charmap.Windows1258
	case 20866:
		return charmap.KOI8R
	case 21866:
		return charmap.KOI8U
	case 28591:
		return charmap.ISO8859_1
	}
	return nil
}

// consoleDecoder returns how to turn what a cmd script printed into UTF-8
// when the console starts in code page cp: line by line, a line that is
// valid UTF-8 stays as it is — ASCII reads the same in every code page
// here, and output after `chcp 65001` is UTF-8 — and any other line is
// decoded from cp. Text in cp that happens to be valid UTF-8 is rare (two
// or more accented letters in a row forming a UTF-8 sequence) and is the
// price of handling both. nil (plain UTF-8, invalid bytes replaced) when cp
// is UTF-8 or has no table.
func consoleDecoder(cp uint32) func([]byte) string {
	enc := codePage(cp)
	if enc == nil || cp == cpUTF8 {
		return nil
	}
	return func(b []byte) string {
		if utf8.Valid(b) {
			return string(b)
		}
		var sb strings.Builder
		sb.Grow(len(b) + len(b)/2)
		for len(b) > 0 {
			n := bytes.IndexByte(b, '\n') + 1
			if n == 0 {
				n = len(b)
			}
			line := b[:n]
			b = b[n:]
			if utf8.Valid(line) {
				sb.Write(line)
				continue
			}
			// x/text decoders replace bytes a table does not map with
			// U+FFFD rather than failing; an error here would be a bug in
			// the table, so fall back to plain UTF-8.
			d, err := enc.NewDecoder().Bytes(line)
			if err != nil {
				sb.WriteString(decodeLossy(line))
				continue
			}
			sb.Write(d)
		}
		return sb.String()
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
