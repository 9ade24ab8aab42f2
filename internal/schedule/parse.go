package schedule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Doc is one schedule read from a YAML file.
type Doc struct {
	// File is the name the schedule was read from; Line is where its
	// document starts.
	File     string
	Line     int
	Schedule *Schedule
	// Raw is the YAML text of this document as the operator wrote it
	// (what schedules_yaml keeps).
	Raw []byte
}

// ParseFile reads every schedule in the YAML file at path (see Parse).
func ParseFile(path string) ([]Doc, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return Parse(path, b)
}

// ParseYAML reads the schedules in data (one or more YAML documents); name
// is the file name used in errors. See Parse.
func ParseYAML(name string, data []byte) ([]Schedule, error) {
	docs, err := Parse(name, data)
	out := make([]Schedule, 0, len(docs))
	for _, d := range docs {
		out = append(out, *d.Schedule)
	}
	return out, err
}

// Parse reads the schedules in data strictly: an unknown key is refused by
// its dotted path (`when.calendar.dyas`), a duplicate key is refused, and
// each schedule is validated (Validate). Valid documents are returned even
// when others are not; the error joins one line per problem, each starting
// "<file>:<line>: ".
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
		return nil, fmt.Errorf("%s: no schedule in the file", name)
	}
	raws := splitDocuments(data)
	if len(raws) != len(nodes) {
		raws = nil // unusual layout: re-encode each document instead
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
		s, err := fromNode(n.Content[0])
		if err == nil {
			err = s.Validate()
		}
		if err != nil {
			errs = append(errs, docError(name, d.Line, s, err))
			continue
		}
		d.Schedule = s
		docs = append(docs, d)
	}
	return docs, errors.Join(errs...)
}

// lineRef matches the "line N: " that nodeError puts first.
var lineRef = regexp.MustCompile(`^line (\d+): `)

// docError puts the file and line first on every line of err:
// "schedules/x.yaml:7: schedule \"x\": unknown key when.calendar.dyas".
func docError(file string, line int, s *Schedule, err error) error {
	id := ""
	if s != nil && s.ID != "" {
		id = fmt.Sprintf("schedule %q: ", s.ID)
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

// nodeError is a problem at a node, with its line for docError.
func nodeError(n *yaml.Node, format string, a ...any) error {
	return fmt.Errorf("line %d: %s", n.Line, fmt.Sprintf(format, a...))
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// mapping walks a mapping node's pairs after refusing duplicate keys and
// anything that is not a mapping.
func mapping(n *yaml.Node, path, hint string, each func(k, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return nodeError(n, "%s: want a mapping (%s)", path, hint)
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if first, ok := seen[k.Value]; ok {
			return nodeError(k, "duplicate key %s%s (first at line %d)", prefix(path), k.Value, first)
		}
		seen[k.Value] = k.Line
	}
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		if err := each(n.Content[i], resolve(n.Content[i+1])); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func prefix(path string) string {
	if path == "" {
		return ""
	}
	return path + "."
}

// fromNode builds a Schedule from a document's root, refusing unknown keys
// by their dotted path.
func fromNode(root *yaml.Node) (*Schedule, error) {
	root = resolve(root)
	s := &Schedule{Enabled: true}
	allowed := append(slices.Clone(topKeys), upstreamTopKeys...)
	err := mapping(root, "", "id: …, job_id: …, when: …, target: …", func(k, v *yaml.Node) error {
		var err error
		switch k.Value {
		case "id":
			s.ID, err = scalar(v, "id")
		case "job_id":
			s.JobID, err = scalar(v, "job_id")
		case "when":
			err = whenFromNode(v, &s.When)
		case "target":
			err = targetFromNode(v, &s.Target)
		case "runs_on":
			s.RunsOn, err = scalar(v, "runs_on")
		case "enabled":
			s.Enabled, err = boolean(v, "enabled")
		case "tz":
			s.TZ, err = scalar(v, "tz")
		case "jitter":
			s.Jitter, err = scalar(v, "jitter")
		case "starting_deadline":
			s.StartingDeadline, err = scalar(v, "starting_deadline")
		case "active":
			err = mapping(v, "active", "from: …, until: …", func(k, v *yaml.Node) error {
				switch k.Value {
				case "from":
					s.Active.From, err = scalar(v, "active.from")
				case "until":
					s.Active.Until, err = scalar(v, "active.until")
				default:
					return unknownKey(k, "active."+k.Value, activeKeys)
				}
				return err
			})
		case "constraints":
			err = constraintsFromNode(v, &s.Constraints)
		case "tags":
			s.Tags, err = stringList(v, "tags")
		default:
			if !slices.Contains(upstreamTopKeys, k.Value) {
				return unknownKey(k, k.Value, allowed)
			}
			var raw json.RawMessage
			if raw, err = nodeJSON(v, k.Value); err == nil {
				if s.Extra == nil {
					s.Extra = map[string]json.RawMessage{}
				}
				s.Extra[k.Value] = raw
			}
		}
		return err
	})
	s.fillDefaults()
	return s, err
}

func targetFromNode(n *yaml.Node, t *Target) error {
	return mapping(n, "target", "all: true, groups: […] or pcs: […]", func(k, v *yaml.Node) error {
		var err error
		switch k.Value {
		case "all":
			t.All, err = boolean(v, "target.all")
		case "groups":
			t.Groups, err = stringList(v, "target.groups")
		case "pcs":
			t.PCs, err = stringList(v, "target.pcs")
		default:
			return unknownKey(k, "target."+k.Value, targetKeys)
		}
		return err
	})
}

func constraintsFromNode(n *yaml.Node, c *Constraints) error {
	return mapping(n, "constraints", "window: HH:MM-HH:MM, skip_dates: […]", func(k, v *yaml.Node) error {
		var err error
		switch k.Value {
		case "window":
			c.Window, err = scalar(v, "constraints.window")
		case "skip_dates":
			c.SkipDates, err = stringList(v, "constraints.skip_dates")
		default:
			if !slices.Contains(upstreamConstraintKeys, k.Value) {
				return unknownKey(k, "constraints."+k.Value, append(slices.Clone(constraintKeys), upstreamConstraintKeys...))
			}
			var raw json.RawMessage
			if raw, err = nodeJSON(v, "constraints."+k.Value); err == nil {
				if c.Extra == nil {
					c.Extra = map[string]json.RawMessage{}
				}
				c.Extra[k.Value] = raw
			}
		}
		return err
	})
}

// whenFromNode reads a when mapping with exactly one kind.
func whenFromNode(n *yaml.Node, w *When) error {
	if n.Kind != yaml.MappingNode {
		return nodeError(n, "when: want a mapping like {per_pc: once} or {calendar: {at: \"09:00\"}}")
	}
	if len(n.Content) != 2 {
		if len(n.Content) == 0 {
			return nodeError(n, "when: empty; give one of per_pc, per_target, calendar, on")
		}
		return nodeError(n, "when: give exactly one of per_pc, per_target, calendar, on")
	}
	return mapping(n, "when", "", func(k, v *yaml.Node) error {
		switch Kind(k.Value) {
		case KindPerPC, KindPerTarget:
			p, err := perFromNode(v, "when."+k.Value)
			if err != nil {
				return err
			}
			if Kind(k.Value) == KindPerPC {
				w.PerPC = &p
			} else {
				w.PerTarget = &p
			}
		case KindCalendar:
			c := &Calendar{}
			w.Calendar = c
			return mapping(v, "when.calendar", `at: "09:00", days: [mon-fri]`, func(k, v *yaml.Node) error {
				var err error
				switch k.Value {
				case "at":
					c.At, err = scalar(v, "when.calendar.at")
				case "days":
					c.Days, err = stringList(v, "when.calendar.days")
				default:
					return unknownKey(k, "when.calendar."+k.Value, calendarKeys)
				}
				return err
			})
		case KindOn:
			on, err := stringList(v, "when.on")
			if err != nil {
				return err
			}
			w.On = on
		default:
			return unknownKey(k, "when."+k.Value, whenKeys)
		}
		return nil
	})
}

// perFromNode reads `once` or {every: 6h}.
func perFromNode(n *yaml.Node, path string) (Per, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Value != "once" {
			msg := fmt.Sprintf("%s: %q is not once or {every: <duration>}", path, n.Value)
			if editDistance(n.Value, "once") <= 2 {
				msg += " (did you mean once?)"
			}
			return Per{}, nodeError(n, "%s", msg)
		}
		return Per{}, nil
	case yaml.MappingNode:
		var p Per
		err := mapping(n, path, "every: 6h", func(k, v *yaml.Node) error {
			if k.Value != "every" {
				return unknownKey(k, path+"."+k.Value, everyKeys)
			}
			var err error
			p.Every, err = scalar(v, path+".every")
			return err
		})
		if err == nil && p.Every == "" {
			err = nodeError(n, "%s: want once or {every: <duration>}", path)
		}
		return p, err
	}
	return Per{}, nodeError(n, "%s: want once or {every: <duration>}", path)
}

// scalar returns a scalar's text exactly as written.
func scalar(n *yaml.Node, path string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", nodeError(n, "%s: want a single value, not a list or mapping", path)
	}
	if n.Tag == "!!null" {
		return "", nil
	}
	return n.Value, nil
}

func boolean(n *yaml.Node, path string) (bool, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		return false, nodeError(n, "%s: want true or false", path)
	}
	var b bool
	err := n.Decode(&b)
	return b, err
}

func stringList(n *yaml.Node, path string) ([]string, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, nodeError(n, "%s: want a list", path)
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
		return nil, nodeError(n, "%s: %v", path, err)
	}
	b, err := json.Marshal(jsonable(v))
	if err != nil {
		return nil, nodeError(n, "%s: cannot be stored as JSON: %v", path, err)
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

func unknownKey(k *yaml.Node, path string, known []string) error {
	last := path[strings.LastIndex(path, ".")+1:]
	msg := "unknown key " + path
	if s := closest(last, known); s != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", s)
	}
	return nodeError(k, "%s", msg)
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
