package runner

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func feed(max int, chunks ...string) *capture {
	c := newCapture(max)
	for _, ch := range chunks {
		c.Write([]byte(ch))
	}
	return c
}

func TestCapture(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		chunks []string
		want   string
	}{
		{"empty", 30, nil, ""},
		{"under the cap", 30, []string{"hello ", "world"}, "hello world"},
		{"exactly the cap", 9, []string{"012345678"}, "012345678"},
		{"one over", 9, []string{"0123456789"}, "012345" + truncationMarker(1, 6, 3, 10) + "789"},
		{"one big chunk", 9, []string{strings.Repeat("a", 50) + "xyz"}, "aaaaaa" + truncationMarker(44, 6, 3, 53) + "xyz"},
		{"byte by byte", 9, strings.Split("abcdefghijklmnop", ""), "abcdef" + truncationMarker(7, 6, 3, 16) + "nop"},
		{"tail window slides across chunks", 12, []string{"AAAAAAAA", "bb", "cc", "dd", "ee"}, "AAAAAAAA" + truncationMarker(4, 8, 4, 16) + "ddee"},
		{"budget not divisible by three", 10, []string{"0123456789ABCDEF"}, "012345" + truncationMarker(7, 6, 3, 16) + "DEF"},
		{"zero budget means default", 0, []string{"small"}, "small"},
		{"character straddling head and tail, nothing dropped", 6, []string{"ab€c"}, "ab€c"},
		// "€" is 3 bytes: the head would end inside it and the tail start
		// inside another; both cuts move to a character boundary and the
		// counts say so.
		{"cuts move to character boundaries", 9, []string{"abcde€€€€€€fgh€"}, "abcde" + truncationMarker(21, 5, 3, 29) + "€"},
		{"invalid bytes replaced", 30, []string{"a\xffb\xe2\x82c"}, "a\uFFFDb\uFFFDc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := feed(tt.max, tt.chunks...).String(); got != tt.want {
				t.Fatalf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestCaptureDefaultSplit(t *testing.T) {
	c := newCapture(0)
	if c.headMax != 5592405 || c.tailMax != 2796202 {
		t.Fatalf("8 MiB splits into %d + %d", c.headMax, c.tailMax)
	}
}

func TestCaptureMemoryBounded(t *testing.T) {
	const max = 3000
	c := newCapture(max)
	chunk := bytes.Repeat([]byte("x"), 1000)
	for range 10000 { // 10 MB through a 3 KB budget
		c.Write(chunk)
	}
	if cap(c.head)+cap(c.tail) > max {
		t.Fatalf("holding %d bytes for a %d budget", cap(c.head)+cap(c.tail), max)
	}
	if c.total != 10_000_000 {
		t.Fatalf("counted %d bytes", c.total)
	}
}

func TestDecodeLossy(t *testing.T) {
	// Expected values are what Rust's String::from_utf8_lossy returns: one
	// U+FFFD per maximal ill-formed subsequence.
	tests := []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"こんにちは", "こんにちは"},
		{"\xff", "\uFFFD"},
		{"Hello\xF0\x90\x80World", "Hello\uFFFDWorld"},
		{"\xe2\x82", "\uFFFD"},
		{"\xe2\x82\xe2\x82\xac", "\uFFFD€"},
		{"\xc0\x80", "\uFFFD\uFFFD"},           // overlong: C0 can never start a character
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, // surrogate: ED A0 is ill-formed at A0
		{"\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"\xf0\x9f\x98", "\uFFFD"},
		{"a\x80\x80b", "a\uFFFD\uFFFDb"},
		{"\x82\xbf\x82\xc2", "\uFFFD\uFFFD\uFFFD\uFFFD"}, // CP932 ちつ
		{"\xef\xbf\xbd", "\uFFFD"},                       // a real U+FFFD stays one
	}
	for _, tt := range tests {
		if got := decodeLossy([]byte(tt.in)); got != tt.want {
			t.Errorf("decodeLossy(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

var markerRE = regexp.MustCompile(`\n\[… kanade: (\d+) bytes omitted \(kept first (\d+) and last (\d+) of (\d+)\) …\]\n`)

// FuzzCapture checks, for any input and chunking, that memory stays within
// the budget, that nothing is dropped under the cap, and that over the cap
// the output is exactly the decoded first and last bytes around a marker
// whose counts add up.
func FuzzCapture(f *testing.F) {
	f.Add([]byte("hello world"), uint16(6), uint8(3))
	f.Add([]byte("abcde€€€€€€fgh€"), uint16(9), uint8(1))
	f.Add(bytes.Repeat([]byte{0xe2, 0x82, 0xac, 0xff}, 100), uint16(50), uint8(7))
	f.Fuzz(func(t *testing.T, data []byte, budget uint16, chunk uint8) {
		max := int(budget%4096) + 1
		step := int(chunk) + 1
		c := newCapture(max)
		for i := 0; i < len(data); i += step {
			c.Write(data[i:min(i+step, len(data))])
			if cap(c.head)+cap(c.tail) > max {
				t.Fatalf("holding %d bytes for a %d budget", cap(c.head)+cap(c.tail), max)
			}
		}
		got := c.String()
		if !utf8.ValidString(got) {
			t.Fatalf("output not valid UTF-8: %q", got)
		}
		if len(data) <= c.headMax+c.tailMax {
			if want := decodeLossy(data); got != want {
				t.Fatalf("under the cap: got %q want %q", got, want)
			}
			return
		}
		m := markerRE.FindAllStringSubmatchIndex(got, -1)
		if len(m) == 0 {
			t.Fatalf("over the cap (%d > %d) without a marker: %q", len(data), max, got)
		}
		// Scan markers from the last: the decoded head could in principle
		// contain marker-like text from the data itself.
		var omitted, head, tail, total int
		for k := len(m) - 1; k >= 0; k-- {
			at := func(i int) int { v, _ := strconv.Atoi(got[m[k][2*i]:m[k][2*i+1]]); return v }
			omitted, head, tail, total = at(1), at(2), at(3), at(4)
			want := decodeLossy(data[:head]) + truncationMarker(int64(omitted), head, tail, int64(total)) + decodeLossy(data[len(data)-tail:])
			if got == want {
				break
			}
			if k == 0 {
				t.Fatalf("output is not head+marker+tail:\n got %q\nwant %q", got, want)
			}
		}
		if total != len(data) || omitted != total-head-tail {
			t.Fatalf("counts: omitted %d head %d tail %d total %d for %d bytes", omitted, head, tail, total, len(data))
		}
		if head > c.headMax || head < c.headMax-3 || tail > c.tailMax || tail < c.tailMax-3 {
			t.Fatalf("kept head %d (max %d) tail %d (max %d)", head, c.headMax, tail, c.tailMax)
		}
	})
}

func ExampleRun_marker() {
	fmt.Printf("%q\n", truncationMarker(12345678, 5592405, 2796202, 20734285))
	// Output: "\n[… kanade: 12345678 bytes omitted (kept first 5592405 and last 2796202 of 20734285) …]\n"
}

// FuzzDecodeLossy checks decodeLossy against the standard library: valid
// input is returned unchanged, and apart from where replacement characters
// go, it keeps exactly the characters strings.ToValidUTF8 keeps (a maximal
// ill-formed subpart is a lead byte plus continuation bytes, which can never
// begin a valid character, so both decoders agree on every valid one).
func FuzzDecodeLossy(f *testing.F) {
	f.Add([]byte("Hello\xF0\x90\x80World"))
	f.Add([]byte("\xed\xa0\x80\xe2\x82\xac"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got := decodeLossy(b)
		if !utf8.ValidString(got) {
			t.Fatalf("invalid output %q", got)
		}
		if utf8.Valid(b) && got != string(b) {
			t.Fatalf("valid input changed: %q -> %q", b, got)
		}
		strip := func(s string) string { return strings.ReplaceAll(s, "\uFFFD", "") }
		if want := strip(strings.ToValidUTF8(string(b), "")); strip(got) != want {
			t.Fatalf("kept characters differ: %q vs %q", strip(got), want)
		}
		if n := strings.Count(got, "\uFFFD") - strings.Count(string(b), "\uFFFD"); n > len(b) {
			t.Fatalf("%d replacements for %d bytes", n, len(b))
		}
	})
}
