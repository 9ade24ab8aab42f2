package jobs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/kanadehq/kanade-go/internal/core"
)

// Doc is one manifest read from a YAML file.
type Doc struct {
	// File is the path the manifest was read from; Line is where its
	// document starts.
	File string
	Line int
	Job  *Job
	// Raw is the YAML text of this document, as the operator wrote it
	// (what jobs_yaml keeps).
	Raw []byte
	// ScriptFile is the execute.script_file that was inlined, if any.
	ScriptFile string
}

// ParseFile reads every manifest in the YAML file at path. Documents that
// are valid are returned even when others are not; the error joins one line
// per bad document, each naming the file.
func ParseFile(path string) ([]Doc, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return Parse(path, b)
}

// Files expands args into YAML files: a file as given, a directory into its
// *.yaml and *.yml files (recursively, sorted).
func Files(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", a, err)
		}
		if !st.IsDir() {
			out = append(out, a)
			continue
		}
		var found []string
		err = filepath.WalkDir(a, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
				found = append(found, p)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read directory %s: %w", a, err)
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("directory %s holds no .yaml or .yml file", a)
		}
		sort.Strings(found)
		out = append(out, found...)
	}
	return out, nil
}

// Parse reads the manifests in data (one or more YAML documents); name is
// the file name used in errors and to resolve script_file.
func Parse(name string, data []byte) ([]Doc, error) {
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
		return nil, fmt.Errorf("%s: no manifest in the file", name)
	}
	raws := splitDocuments(data)
	if len(raws) != len(nodes) || !utf8.Valid(data) {
		// An unusual layout, or text the decoder read as UTF-16 (the
		// stored YAML must be UTF-8): re-encode each document instead.
		raws = nil
	}
	var docs []Doc
	var errs []error
	for i, n := range nodes {
		d := Doc{File: name, Line: n.Content[0].Line}
		if raws != nil {
			d.Raw = raws[i]
		} else if b, err := yaml.Marshal(n); err == nil {
			d.Raw = b
		}
		j, err := fromNode(n.Content[0])
		if err == nil {
			d.ScriptFile = j.Execute.ScriptFile
			err = inlineScriptFile(j, name)
		}
		if err == nil {
			err = j.Validate()
		}
		if err != nil {
			errs = append(errs, docError(name, d.Line, j, err))
			continue
		}
		d.Job = j
		docs = append(docs, d)
	}
	return docs, errors.Join(errs...)
}

// docError puts the file and line first on every line of err:
// "jobs/x.yaml:7: unknown key execute.scirpt (did you mean script?)".
func docError(file string, line int, j *Job, err error) error {
	id := ""
	if j != nil && j.ID != "" {
		id = fmt.Sprintf("job %q: ", j.ID)
	}
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		at := line
		if m := lineRef.FindStringSubmatch(l); m != nil {
			at, _ = strconv.Atoi(m[1])
			l = l[len(m[0]):]
		}
		lines = append(lines, fmt.Sprintf("%s:%d: %s%s", file, at, id, l))
	}
	return errors.New(strings.Join(lines, "\n"))
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

// inlineScriptFile replaces execute.script_file by the file's text, read
// relative to the manifest's directory.
func inlineScriptFile(j *Job, manifest string) error {
	sf := j.Execute.ScriptFile
	if sf == "" {
		return nil
	}
	if j.Execute.Script != "" || j.Execute.ScriptObject != "" {
		return errors.New("execute: give exactly one of script, script_file or script_object")
	}
	p := sf
	if !filepath.IsAbs(p) {
		p = filepath.Join(filepath.Dir(manifest), p)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("execute.script_file: %w", err)
	}
	if len(b) > MaxInlineScript {
		return fmt.Errorf("execute.script_file: %s is %d bytes, over the %d KiB inline limit; publish it with `kanade script publish` and use script_object", p, len(b), MaxInlineScript>>10)
	}
	if !utf8.Valid(b) {
		return fmt.Errorf("execute.script_file: %s is not valid UTF-8", p)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return fmt.Errorf("execute.script_file: %s is empty", p)
	}
	j.Execute.Script = string(b)
	j.Execute.ScriptFile = ""
	return nil
}

// keyError is an unknown or misplaced key, with its dotted path.
func keyError(n *yaml.Node, format string, a ...any) error {
	return fmt.Errorf("line %d: %s", n.Line, fmt.Sprintf(format, a...))
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// fromNode builds a Job from a document's root, refusing unknown keys by
// their dotted path.
func fromNode(root *yaml.Node) (*Job, error) {
	root = resolve(root)
	if root.Kind != yaml.MappingNode {
		return nil, keyError(root, "a manifest is a mapping (id: …, version: …, execute: …)")
	}
	j := &Job{}
	var errs []error
	allowed := append(slices.Clone(topKeys), upstreamKeys...)
	if err := duplicateKeys(root, ""); err != nil {
		return j, err
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], resolve(root.Content[i+1])
		var err error
		switch k.Value {
		case "id":
			j.ID, err = scalar(v, "id")
		case "version":
			j.Version, err = scalar(v, "version")
		case "description":
			j.Description, err = scalar(v, "description")
		case "execute":
			err = executeFromNode(v, &j.Execute)
		case "staleness":
			j.Staleness, err = stalenessFromNode(v)
		case "tags":
			j.Tags, err = stringList(v, "tags")
		default:
			if !slices.Contains(upstreamKeys, k.Value) {
				err = unknownKey(k, k.Value, allowed)
				break
			}
			var raw json.RawMessage
			raw, err = nodeJSON(v, k.Value)
			if err == nil {
				if j.Extra == nil {
					j.Extra = map[string]json.RawMessage{}
				}
				j.Extra[k.Value] = raw
			}
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return j, errors.Join(errs...)
}

func executeFromNode(n *yaml.Node, e *Execute) error {
	if n.Kind != yaml.MappingNode {
		return keyError(n, "execute: want a mapping (shell: …, script: …)")
	}
	if err := duplicateKeys(n, "execute."); err != nil {
		return err
	}
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		path := "execute." + k.Value
		var err error
		switch k.Value {
		case "shell":
			e.Shell, err = scalar(v, path)
		case "script":
			e.Script, err = scalar(v, path)
		case "script_file":
			e.ScriptFile, err = scalar(v, path)
		case "script_object":
			e.ScriptObject, err = scalar(v, path)
		case "timeout":
			e.Timeout, err = scalar(v, path)
		case "run_as":
			e.RunAs, err = scalar(v, path)
		case "cwd":
			e.Cwd, err = scalar(v, path)
		case "bypass_local_limit":
			if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
				err = keyError(v, "%s: want true or false", path)
			} else {
				err = v.Decode(&e.BypassLocalLimit)
			}
		default:
			err = unknownKey(k, path, executeKeys)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stalenessFromNode reads "cached" or {mode: strict, max_cache_age: 1h}.
func stalenessFromNode(n *yaml.Node) (*core.Staleness, error) {
	obj := map[string]string{}
	switch n.Kind {
	case yaml.ScalarNode:
		obj["mode"] = n.Value
	case yaml.MappingNode:
		if err := duplicateKeys(n, "staleness."); err != nil {
			return nil, err
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], resolve(n.Content[i+1])
			if !slices.Contains(stalenessKeys, k.Value) {
				return nil, unknownKey(k, "staleness."+k.Value, stalenessKeys)
			}
			s, err := scalar(v, "staleness."+k.Value)
			if err != nil {
				return nil, err
			}
			obj[k.Value] = s
		}
	default:
		return nil, keyError(n, "staleness: want cached, unchecked, or {mode: strict, max_cache_age: 1h}")
	}
	b, _ := json.Marshal(obj)
	var s core.Staleness
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, keyError(n, "staleness: %v", err)
	}
	if s.InvalidMaxCacheAge != "" {
		// Stored, it would reach every agent as 0 s and each run would
		// be answered 127: a typo must not become that default.
		return nil, keyError(n, "staleness.max_cache_age: %q is not a duration (like 30m, 1h, 7d)", obj["max_cache_age"])
	}
	return &s, nil
}

// scalar returns a scalar's text exactly as written, so `version: 1.10`
// stays "1.10" rather than becoming the number 1.1.
func scalar(n *yaml.Node, path string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", keyError(n, "%s: want a single value, not a list or mapping", path)
	}
	if n.Tag == "!!null" {
		return "", nil
	}
	return n.Value, nil
}

func stringList(n *yaml.Node, path string) ([]string, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, keyError(n, "%s: want a list", path)
	}
	out := make([]string, 0, len(n.Content))
	for i, c := range n.Content {
		s, err := scalar(resolve(c), path+"["+strconv.Itoa(i)+"]")
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// nodeJSON converts an upstream passthrough value to JSON.
func nodeJSON(n *yaml.Node, path string) (json.RawMessage, error) {
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, keyError(n, "%s: %v", path, err)
	}
	b, err := json.Marshal(jsonable(v))
	if err != nil {
		return nil, keyError(n, "%s: cannot be stored as JSON: %v", path, err)
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

// duplicateKeys refuses a key given twice in one mapping: YAML decoders
// differ on which one wins, so neither may.
func duplicateKeys(n *yaml.Node, prefix string) error {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if first, ok := seen[k.Value]; ok {
			return keyError(k, "duplicate key %s%s (first at line %d)", prefix, k.Value, first)
		}
		seen[k.Value] = k.Line
	}
	return nil
}

func unknownKey(k *yaml.Node, path string, known []string) error {
	last := path[strings.LastIndex(path, ".")+1:]
	msg := fmt.Sprintf("unknown key %s", path)
	if s := closest(last, known); s != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", s)
	}
	return keyError(k, "%s", msg)
}

// closest is the known key within edit distance 2 of s, if any.
// Hand-rolled: a dozen lines do not justify a dependency.
func closest(s string, known []string) string {
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

// lineRef matches the "line N: " that keyError puts first.
var lineRef = regexp.MustCompile(`^line (\d+): `)
