// Package manifest is what job and schedule manifests share (SPEC-2 §3,
// §4): reading operators' YAML strictly — documents with their raw text,
// errors that name the file, line and dotted key path, unknown keys with a
// "did you mean", duplicate keys refused — and keeping upstream's keys this
// build does not model when the JSON is read and written back.
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Document is one non-empty YAML document of a file.
type Document struct {
	// Root is the document's top node; Line its first line.
	Root *yaml.Node
	Line int
	// Raw is the document's text, UTF-8 (what goes to the *_yaml bucket).
	Raw []byte
}

// Documents decodes the YAML documents in data. name is the file named in
// errors; what names its contents for a file with none ("no job in the
// file"). A syntax error fails the whole file, reported as
// "<name>:<line>: <message>".
func Documents(name, what string, data []byte) ([]Document, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var nodes []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), "yaml: ")
			if m := lineRef.FindStringSubmatch(msg); m != nil {
				return nil, fmt.Errorf("%s:%s: %s", name, m[1], msg[len(m[0]):])
			}
			return nil, fmt.Errorf("%s: %s", name, msg)
		}
		if len(n.Content) == 0 || (n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null") {
			continue // an empty document
		}
		nodes = append(nodes, &n)
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("%s: no %s in the file", name, what)
	}
	raws := splitDocuments(data)
	if len(raws) != len(nodes) || !utf8.Valid(data) {
		// An unusual layout, or text the decoder read as UTF-16 (the
		// stored YAML must be UTF-8): re-encode each document instead.
		raws = nil
	}
	docs := make([]Document, len(nodes))
	for i, n := range nodes {
		docs[i] = Document{Root: n.Content[0], Line: n.Content[0].Line}
		if raws != nil {
			docs[i].Raw = raws[i]
		} else if b, err := yaml.Marshal(n); err == nil {
			docs[i].Raw = b
		}
	}
	return docs, nil
}

// splitDocuments cuts data at "---" lines and drops parts holding only
// comments and blank lines, so part i is the text of document i.
func splitDocuments(data []byte) [][]byte {
	var parts [][]byte
	var cur []byte
	flush := func() {
		if hasContent(cur) {
			parts = append(parts, cur)
		}
		cur = nil
	}
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		t := bytes.TrimRight(line, "\r\n")
		if bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) || bytes.Equal(t, []byte("...")) {
			flush()
			continue
		}
		cur = append(cur, line...)
	}
	flush()
	return parts
}

func hasContent(b []byte) bool {
	for _, l := range bytes.Split(b, []byte("\n")) {
		l = bytes.TrimSpace(l)
		if len(l) > 0 && l[0] != '#' && !bytes.HasPrefix(l, []byte("%")) {
			return true
		}
	}
	return false
}

// lineRef matches the "line N: " that NodeError puts first.
var lineRef = regexp.MustCompile(`^line (\d+): `)

// NodeError is a problem at node n, carrying its line for DocError.
func NodeError(n *yaml.Node, format string, a ...any) error {
	return fmt.Errorf("line %d: %s", n.Line, fmt.Sprintf(format, a...))
}

// DocError puts the file and line first on every line of err, then label
// (`job "x": `, empty when the id is not known):
// "jobs/x.yaml:7: job \"x\": unknown key execute.scirpt (did you mean script?)".
// line is used for the lines NodeError did not place.
func DocError(file string, line int, label string, err error) error {
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		at := line
		if m := lineRef.FindStringSubmatch(l); m != nil {
			at, _ = strconv.Atoi(m[1])
			l = l[len(m[0]):]
		}
		lines = append(lines, fmt.Sprintf("%s:%d: %s%s", file, at, label, l))
	}
	return errors.New(strings.Join(lines, "\n"))
}

// Resolve follows YAML aliases to the node they stand for.
func Resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// Scalar returns a scalar's text exactly as written, so `version: 1.10`
// stays "1.10" rather than becoming the number 1.1; null is "".
func Scalar(n *yaml.Node, path string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", NodeError(n, "%s: want a single value, not a list or mapping", path)
	}
	if n.Tag == "!!null" {
		return "", nil
	}
	return n.Value, nil
}

// Boolean is a YAML true or false, nothing else.
func Boolean(n *yaml.Node, path string) (bool, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		return false, NodeError(n, "%s: want true or false", path)
	}
	var b bool
	err := n.Decode(&b)
	return b, err
}

// StringList is a list of scalars.
func StringList(n *yaml.Node, path string) ([]string, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, NodeError(n, "%s: want a list", path)
	}
	out := make([]string, 0, len(n.Content))
	for i, c := range n.Content {
		s, err := Scalar(Resolve(c), path+"["+strconv.Itoa(i)+"]")
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// NodeJSON converts an upstream passthrough value to JSON.
func NodeJSON(n *yaml.Node, path string) (json.RawMessage, error) {
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, NodeError(n, "%s: %v", path, err)
	}
	b, err := json.Marshal(jsonable(v))
	if err != nil {
		return nil, NodeError(n, "%s: cannot be stored as JSON: %v", path, err)
	}
	return b, nil
}

// jsonable turns YAML's map[any]any (non-string keys) into JSON objects.
func jsonable(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			t[k] = jsonable(x)
		}
		return t
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, x := range t {
			m[fmt.Sprint(k)] = jsonable(x)
		}
		return m
	case []any:
		for i, x := range t {
			t[i] = jsonable(x)
		}
		return t
	}
	return v
}

// DuplicateKeys refuses a key given twice in mapping n: YAML decoders
// differ on which one wins, so neither may. prefix is the mapping's dotted
// path with a trailing dot ("" at the top).
func DuplicateKeys(n *yaml.Node, prefix string) error {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if first, ok := seen[k.Value]; ok {
			return NodeError(k, "duplicate key %s%s (first at line %d)", prefix, k.Value, first)
		}
		seen[k.Value] = k.Line
	}
	return nil
}

// UnknownKey refuses key k at its dotted path, suggesting the closest of
// the keys known there.
func UnknownKey(k *yaml.Node, path string, known []string) error {
	last := path[strings.LastIndex(path, ".")+1:]
	msg := "unknown key " + path
	if s := Closest(last, known); s != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", s)
	}
	return NodeError(k, "%s", msg)
}

// Closest is the known word within edit distance 2 of s, if any.
// Hand-rolled: a dozen lines do not justify a dependency.
func Closest(s string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(s, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// MarshalWithExtra encodes v and adds the keys of extra it does not set
// itself: upstream's keys read from storage are written back unchanged.
func MarshalWithExtra(v any, extra map[string]json.RawMessage) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil || len(extra) == 0 {
		return b, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, raw := range extra {
		if _, known := m[k]; !known {
			m[k] = raw
		}
	}
	return json.Marshal(m)
}

// ExtraKeys are the keys of the JSON object b other than known (nil when
// none): what MarshalWithExtra writes back.
func ExtraKeys(b []byte, known []string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for _, k := range known {
		delete(m, k)
	}
	if len(m) == 0 {
		return nil, nil
	}
	return maps.Clone(m), nil
}
