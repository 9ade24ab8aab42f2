package jobs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/manifest"
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
	nodes, err := manifest.Documents(name, "manifest", data)
	if err != nil {
		return nil, err
	}
	var docs []Doc
	var errs []error
	for _, n := range nodes {
		d := Doc{File: name, Line: n.Line, Raw: n.Raw}
		j, err := fromNode(n.Root)
		if err == nil {
			d.ScriptFile = j.Execute.ScriptFile
			err = inlineScriptFile(j, name)
		}
		if err == nil {
			err = j.Validate()
		}
		if err != nil {
			label := ""
			if j != nil && j.ID != "" {
				label = fmt.Sprintf("job %q: ", j.ID)
			}
			errs = append(errs, manifest.DocError(name, d.Line, label, err))
			continue
		}
		d.Job = j
		docs = append(docs, d)
	}
	return docs, errors.Join(errs...)
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

// fromNode builds a Job from a document's root, refusing unknown keys by
// their dotted path.
func fromNode(root *yaml.Node) (*Job, error) {
	root = manifest.Resolve(root)
	if root.Kind != yaml.MappingNode {
		return nil, manifest.NodeError(root, "a manifest is a mapping (id: …, version: …, execute: …)")
	}
	j := &Job{}
	var errs []error
	allowed := append(slices.Clone(topKeys), upstreamKeys...)
	if err := manifest.DuplicateKeys(root, ""); err != nil {
		return j, err
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], manifest.Resolve(root.Content[i+1])
		var err error
		switch k.Value {
		case "id":
			j.ID, err = manifest.Scalar(v, "id")
		case "version":
			j.Version, err = manifest.Scalar(v, "version")
		case "description":
			j.Description, err = manifest.Scalar(v, "description")
		case "execute":
			err = executeFromNode(v, &j.Execute)
		case "staleness":
			j.Staleness, err = stalenessFromNode(v)
		case "tags":
			j.Tags, err = manifest.StringList(v, "tags")
		default:
			if !slices.Contains(upstreamKeys, k.Value) {
				err = manifest.UnknownKey(k, k.Value, allowed)
				break
			}
			var raw json.RawMessage
			raw, err = manifest.NodeJSON(v, k.Value)
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
		return manifest.NodeError(n, "execute: want a mapping (shell: …, script: …)")
	}
	if err := manifest.DuplicateKeys(n, "execute."); err != nil {
		return err
	}
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], manifest.Resolve(n.Content[i+1])
		path := "execute." + k.Value
		var err error
		switch k.Value {
		case "shell":
			e.Shell, err = manifest.Scalar(v, path)
		case "script":
			e.Script, err = manifest.Scalar(v, path)
		case "script_file":
			e.ScriptFile, err = manifest.Scalar(v, path)
		case "script_object":
			e.ScriptObject, err = manifest.Scalar(v, path)
		case "timeout":
			e.Timeout, err = manifest.Scalar(v, path)
		case "run_as":
			e.RunAs, err = manifest.Scalar(v, path)
		case "cwd":
			e.Cwd, err = manifest.Scalar(v, path)
		case "bypass_local_limit":
			if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
				err = manifest.NodeError(v, "%s: want true or false", path)
			} else {
				err = v.Decode(&e.BypassLocalLimit)
			}
		default:
			err = manifest.UnknownKey(k, path, executeKeys)
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
		if err := manifest.DuplicateKeys(n, "staleness."); err != nil {
			return nil, err
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], manifest.Resolve(n.Content[i+1])
			if !slices.Contains(stalenessKeys, k.Value) {
				return nil, manifest.UnknownKey(k, "staleness."+k.Value, stalenessKeys)
			}
			s, err := manifest.Scalar(v, "staleness."+k.Value)
			if err != nil {
				return nil, err
			}
			obj[k.Value] = s
		}
	default:
		return nil, manifest.NodeError(n, "staleness: want cached, unchecked, or {mode: strict, max_cache_age: 1h}")
	}
	b, _ := json.Marshal(obj)
	var s core.Staleness
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, manifest.NodeError(n, "staleness: %v", err)
	}
	if s.InvalidMaxCacheAge != "" {
		// Stored, it would reach every agent as 0 s and each run would
		// be answered 127: a typo must not become that default.
		return nil, manifest.NodeError(n, "staleness.max_cache_age: %q is not a duration (like 30m, 1h, 7d)", obj["max_cache_age"])
	}
	return &s, nil
}
