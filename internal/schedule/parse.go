package schedule

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/kanadehq/kanade-go/internal/manifest"
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
	nodes, err := manifest.Documents(name, "schedule", data)
	if err != nil {
		return nil, err
	}
	var docs []Doc
	var errs []error
	for _, n := range nodes {
		d := Doc{File: name, Line: n.Line, Raw: n.Raw}
		s, err := fromNode(n.Root)
		if err == nil {
			err = s.Validate()
		}
		if err != nil {
			label := ""
			if s != nil && s.ID != "" {
				label = fmt.Sprintf("schedule %q: ", s.ID)
			}
			errs = append(errs, manifest.DocError(name, d.Line, label, err))
			continue
		}
		d.Schedule = s
		docs = append(docs, d)
	}
	return docs, errors.Join(errs...)
}

// mapping walks a mapping node's pairs after refusing duplicate keys and
// anything that is not a mapping.
func mapping(n *yaml.Node, path, hint string, each func(k, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return manifest.NodeError(n, "%s: want a mapping (%s)", path, hint)
	}
	if err := manifest.DuplicateKeys(n, prefix(path)); err != nil {
		return err
	}
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		if err := each(n.Content[i], manifest.Resolve(n.Content[i+1])); err != nil {
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
	root = manifest.Resolve(root)
	s := &Schedule{Enabled: true}
	allowed := append(slices.Clone(topKeys), upstreamTopKeys...)
	err := mapping(root, "", "id: …, job_id: …, when: …, target: …", func(k, v *yaml.Node) error {
		var err error
		switch k.Value {
		case "id":
			s.ID, err = manifest.Scalar(v, "id")
		case "job_id":
			s.JobID, err = manifest.Scalar(v, "job_id")
		case "when":
			err = whenFromNode(v, &s.When)
		case "target":
			err = targetFromNode(v, &s.Target)
		case "runs_on":
			s.RunsOn, err = manifest.Scalar(v, "runs_on")
		case "enabled":
			s.Enabled, err = manifest.Boolean(v, "enabled")
		case "tz":
			s.TZ, err = manifest.Scalar(v, "tz")
		case "jitter":
			s.Jitter, err = manifest.Scalar(v, "jitter")
		case "starting_deadline":
			s.StartingDeadline, err = manifest.Scalar(v, "starting_deadline")
		case "active":
			err = mapping(v, "active", "from: …, until: …", func(k, v *yaml.Node) error {
				switch k.Value {
				case "from":
					s.Active.From, err = manifest.Scalar(v, "active.from")
				case "until":
					s.Active.Until, err = manifest.Scalar(v, "active.until")
				default:
					return manifest.UnknownKey(k, "active."+k.Value, activeKeys)
				}
				return err
			})
		case "constraints":
			err = constraintsFromNode(v, &s.Constraints)
		case "tags":
			s.Tags, err = manifest.StringList(v, "tags")
		default:
			if !slices.Contains(upstreamTopKeys, k.Value) {
				return manifest.UnknownKey(k, k.Value, allowed)
			}
			var raw json.RawMessage
			if raw, err = manifest.NodeJSON(v, k.Value); err == nil {
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
			t.All, err = manifest.Boolean(v, "target.all")
		case "groups":
			t.Groups, err = manifest.StringList(v, "target.groups")
		case "pcs":
			t.PCs, err = manifest.StringList(v, "target.pcs")
		default:
			return manifest.UnknownKey(k, "target."+k.Value, targetKeys)
		}
		return err
	})
}

func constraintsFromNode(n *yaml.Node, c *Constraints) error {
	return mapping(n, "constraints", "window: HH:MM-HH:MM, skip_dates: […]", func(k, v *yaml.Node) error {
		var err error
		switch k.Value {
		case "window":
			c.Window, err = manifest.Scalar(v, "constraints.window")
		case "skip_dates":
			c.SkipDates, err = manifest.StringList(v, "constraints.skip_dates")
		default:
			if !slices.Contains(upstreamConstraintKeys, k.Value) {
				return manifest.UnknownKey(k, "constraints."+k.Value, append(slices.Clone(constraintKeys), upstreamConstraintKeys...))
			}
			var raw json.RawMessage
			if raw, err = manifest.NodeJSON(v, "constraints."+k.Value); err == nil {
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
		return manifest.NodeError(n, "when: want a mapping like {per_pc: once} or {calendar: {at: \"09:00\"}}")
	}
	if len(n.Content) != 2 {
		if len(n.Content) == 0 {
			return manifest.NodeError(n, "when: empty; give one of per_pc, per_target, calendar, on")
		}
		return manifest.NodeError(n, "when: give exactly one of per_pc, per_target, calendar, on")
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
					c.At, err = manifest.Scalar(v, "when.calendar.at")
				case "days":
					c.Days, err = manifest.StringList(v, "when.calendar.days")
				default:
					return manifest.UnknownKey(k, "when.calendar."+k.Value, calendarKeys)
				}
				return err
			})
		case KindOn:
			on, err := manifest.StringList(v, "when.on")
			if err != nil {
				return err
			}
			w.On = on
		default:
			return manifest.UnknownKey(k, "when."+k.Value, whenKeys)
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
			if manifest.Closest(n.Value, []string{"once"}) != "" {
				msg += " (did you mean once?)"
			}
			return Per{}, manifest.NodeError(n, "%s", msg)
		}
		return Per{}, nil
	case yaml.MappingNode:
		var p Per
		err := mapping(n, path, "every: 6h", func(k, v *yaml.Node) error {
			if k.Value != "every" {
				return manifest.UnknownKey(k, path+"."+k.Value, everyKeys)
			}
			var err error
			p.Every, err = manifest.Scalar(v, path+".every")
			return err
		})
		if err == nil && p.Every == "" {
			err = manifest.NodeError(n, "%s: want once or {every: <duration>}", path)
		}
		return p, err
	}
	return Per{}, manifest.NodeError(n, "%s: want once or {every: <duration>}", path)
}
