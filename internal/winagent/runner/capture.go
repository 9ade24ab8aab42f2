package runner

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

// DefaultMaxOutput is the per-stream capture cap used when Spec.MaxOutput is
// 0 (SPEC §6.6).
const DefaultMaxOutput = 8 << 20

// capture keeps a bounded copy of one output stream (SPEC §6.6): the first
// two thirds of the budget verbatim (the head, what the run was doing) and a
// sliding window over the last third (the tail, where an error lands), while
// counting every byte written. Memory never exceeds the budget, however much
// the script prints: the head grows up to its share and the tail is a ring
// allocated once, only after the head is full.
//
// One goroutine writes; String may be called from another at any time.
type capture struct {
	mu      sync.Mutex
	headMax int
	tailMax int
	head    []byte
	tail    []byte // ring of tailMax bytes once allocated
	tailPos int    // where the next tail byte goes
	tailLen int
	total   int64
	// decode turns kept bytes into text; nil = decodeLossy. Set before
	// the first Write.
	decode func([]byte) string
}

// newCapture returns a capture with a budget of max bytes (DefaultMaxOutput
// when max <= 0). The budget splits into floor(2max/3) head bytes and
// floor(max/3) tail bytes.
func newCapture(max int) *capture {
	if max <= 0 {
		max = DefaultMaxOutput
	}
	return &capture{headMax: max * 2 / 3, tailMax: max / 3}
}

// Write records p. It never fails, so a chatty script is never blocked or
// broken by the cap.
func (c *capture) Write(p []byte) (int, error) {
	n := len(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total += int64(n)
	if room := c.headMax - len(c.head); room > 0 {
		take := min(room, len(p))
		c.growHead(len(c.head) + take)
		c.head = append(c.head, p[:take]...)
		p = p[take:]
	}
	if len(p) == 0 || c.tailMax == 0 {
		return n, nil
	}
	if c.tail == nil {
		c.tail = make([]byte, c.tailMax)
	}
	if len(p) >= c.tailMax {
		// Only the last tailMax bytes can survive: one copy, not a
		// pass per wrap.
		copy(c.tail, p[len(p)-c.tailMax:])
		c.tailPos, c.tailLen = 0, c.tailMax
		return n, nil
	}
	k := copy(c.tail[c.tailPos:], p)
	copy(c.tail, p[k:])
	c.tailPos = (c.tailPos + len(p)) % c.tailMax
	c.tailLen = min(c.tailLen+len(p), c.tailMax)
	return n, nil
}

// growHead makes room for need head bytes without letting append's doubling
// push the allocation past headMax.
func (c *capture) growHead(need int) {
	if need <= cap(c.head) {
		return
	}
	size := min(max(2*cap(c.head), need, 4096), c.headMax)
	grown := make([]byte, len(c.head), size)
	copy(grown, c.head)
	c.head = grown
}

// tailBytes returns the tail window oldest byte first.
func (c *capture) tailBytes() []byte {
	if c.tailLen < c.tailMax {
		// Never wrapped: the bytes sit at the start of the ring.
		return append([]byte(nil), c.tail[:c.tailLen]...)
	}
	out := make([]byte, 0, c.tailMax)
	out = append(out, c.tail[c.tailPos:]...)
	return append(out, c.tail[:c.tailPos]...)
}

// String decodes what was kept as UTF-8, invalid bytes replaced (or with
// c.decode, when set: a cmd script's OEM code page output). When bytes
// were dropped, the head and tail of UTF-8 output are split at character
// boundaries (so a cut never manufactures a replacement character) and a marker line between
// them states exactly how many bytes were omitted and kept.
func (c *capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	tail := c.tailBytes()
	if c.total <= int64(len(c.head)+len(tail)) {
		// Nothing dropped: head and tail are consecutive, so decode them
		// as one string or a character straddling the seam would break.
		return c.text(append(append([]byte(nil), c.head...), tail...))
	}
	head := c.head
	if c.decode == nil {
		head = head[:trimHeadCut(head)]
		tail = tail[trimTailCut(tail):]
	}
	// With a decoder the bytes are in some code page, not necessarily
	// UTF-8: moving the cut to a UTF-8 boundary would drop whole accented
	// letters, so the cut stays where it fell.
	omitted := c.total - int64(len(head)) - int64(len(tail))
	var b strings.Builder
	b.Grow(len(head) + len(tail) + 128)
	b.WriteString(c.text(head))
	b.WriteString(truncationMarker(omitted, len(head), len(tail), c.total))
	b.WriteString(c.text(tail))
	return b.String()
}

// text decodes b with c.decode, or as UTF-8 when there is none.
func (c *capture) text(b []byte) string {
	if c.decode != nil {
		return c.decode(b)
	}
	return decodeLossy(b)
}

// truncationMarker is the line put where bytes were cut out of a stream.
func truncationMarker(omitted int64, head, tail int, total int64) string {
	return fmt.Sprintf("\n[… kanade: %d bytes omitted (kept first %d and last %d of %d) …]\n",
		omitted, head, tail, total)
}

// trimHeadCut returns how many bytes of a truncated head to keep so it does
// not end inside a character: a trailing, incomplete but so-far valid
// multi-byte sequence is dropped (at most 3 bytes).
func trimHeadCut(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if b[i] >= 0xC0 && !utf8.FullRune(b[i:]) {
				return i
			}
			return len(b)
		}
	}
	return len(b)
}

// trimTailCut returns how many leading bytes of a truncated tail to drop so
// it does not start inside a character: up to 3 continuation bytes.
func trimTailCut(b []byte) int {
	i := 0
	for i < len(b) && i < utf8.UTFMax-1 && !utf8.RuneStart(b[i]) {
		i++
	}
	if i < len(b) && !utf8.RuneStart(b[i]) {
		// Four or more continuation bytes in a row are garbage, not a
		// cut character; keep them (they decode as replacements).
		return 0
	}
	return i
}

// decodeLossy decodes b as UTF-8, replacing each maximal ill-formed
// subsequence with one U+FFFD — the Unicode-recommended practice, and what
// upstream's Rust agent (String::from_utf8_lossy) produces, so both agents
// report the same text for the same bytes.
func decodeLossy(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 16)
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r != utf8.RuneError || size > 1 {
			sb.Write(b[:size])
			b = b[size:]
			continue
		}
		sb.WriteRune(utf8.RuneError)
		b = b[invalidLen(b):]
	}
	return sb.String()
}

// invalidLen is the length (at least 1) of the maximal subpart of the
// ill-formed sequence at the start of b: the longest prefix that could
// still have begun a well-formed character (Unicode §3.9, table 3-7).
func invalidLen(b []byte) int {
	lo, hi := byte(0x80), byte(0xBF)
	var need int
	switch c := b[0]; {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
		need = 2
	case c == 0xED:
		need, hi = 2, 0x9F
	case c == 0xF0:
		need, lo = 3, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	n := 1
	for n <= need && n < len(b) && b[n] >= lo && b[n] <= hi {
		n++
		lo, hi = 0x80, 0xBF
	}
	return n
}
