package jobs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"go.yaml.in/yaml/v3"

	"github.com/kanadehq/kanade-go/internal/core"
)

// YAML renders j as a manifest: the known keys in the order an operator
// writes them, then the kept upstream keys sorted by name. Parse reads it
// back to an equal job. It is what jobs_yaml holds when the operator's own
// text cannot serve (a script_file was inlined) and what `job export`
// writes for a job stored without YAML.
func (j *Job) YAML() ([]byte, error) {
	root := &yaml.Node{Kind: yaml.MappingNode}
	add := func(key string, v *yaml.Node) { root.Content = append(root.Content, str(key), v) }
	add("id", str(j.ID))
	add("version", str(j.Version))
	if j.Description != "" {
		add("description", str(j.Description))
	}
	ex := &yaml.Node{Kind: yaml.MappingNode}
	exAdd := func(key, v string) {
		if v != "" {
			ex.Content = append(ex.Content, str(key), str(v))
		}
	}
	e := j.Execute
	exAdd("shell", e.Shell)
	exAdd("script", e.Script)
	exAdd("script_file", e.ScriptFile)
	exAdd("script_object", e.ScriptObject)
	exAdd("timeout", e.Timeout)
	exAdd("run_as", e.RunAs)
	exAdd("cwd", e.Cwd)
	if e.BypassLocalLimit {
		ex.Content = append(ex.Content, str("bypass_local_limit"), &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"})
	}
	if err := appendExtra(ex, e.Extra); err != nil {
		return nil, fmt.Errorf("execute: %w", err)
	}
	add("execute", ex)
	if s := j.Staleness; s != nil {
		if s.Mode == core.StalenessStrict {
			st := &yaml.Node{Kind: yaml.MappingNode}
			age := s.InvalidMaxCacheAge
			if s.MaxCacheAge != nil && age == "" {
				age = s.MaxCacheAge.String()
			}
			st.Content = append(st.Content, str("mode"), str(s.Mode), str("max_cache_age"), str(age))
			add("staleness", st)
		} else {
			add("staleness", str(s.Mode))
		}
	}
	if len(j.Tags) > 0 {
		tags := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, t := range j.Tags {
			tags.Content = append(tags.Content, str(t))
		}
		add("tags", tags)
	}
	if err := appendExtra(root, j.Extra); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("encode job %q as YAML: %w", j.ID, err)
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// str is a string scalar; the encoder quotes it when plain text would read
// back as another type (version: "1.10" stays a string), and writes a
// multi-line script as a literal block.
func str(s string) *yaml.Node {
	n := &yaml.Node{}
	_ = n.Encode(s)
	return n
}

func appendExtra(m *yaml.Node, extra map[string]json.RawMessage) error {
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		var v any
		if err := json.Unmarshal(extra[k], &v); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		n := &yaml.Node{}
		if err := n.Encode(v); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		m.Content = append(m.Content, str(k), n)
	}
	return nil
}
