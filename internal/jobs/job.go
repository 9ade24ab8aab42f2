// Package jobs is the job manifest model (SPEC-2 §3): YAML written by
// operators, stored as JSON in KV jobs (and the raw YAML in jobs_yaml),
// validated, and turned into the Command that `kanade exec` publishes.
//
// Writing is strict: an unknown key is refused with its dotted path and the
// file it came from, so a typo never becomes a silent default. Reading the
// stored JSON is tolerant, and upstream's keys this build does not model
// (inventory, emit, check, …) are kept as they are and written back.
package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/manifest"
)

// DefaultTimeout is a job's script timeout when execute.timeout is absent
// (the same default as `kanade run`).
const DefaultTimeout = 60 * time.Second

// MaxInlineScript caps an inline script (script or script_file). The
// Command carrying it must fit the broker's max payload (1 MiB by default)
// after JSON escaping; larger scripts belong in the scripts object store.
const MaxInlineScript = 512 << 10

// MaxScriptObject is the largest script the scripts catalog holds (SPEC-2 §1).
const MaxScriptObject = 4 << 20

// Job is one manifest.
type Job struct {
	ID          string          `json:"id"`
	Version     string          `json:"version"`
	Description string          `json:"description,omitempty"`
	Execute     Execute         `json:"execute"`
	Staleness   *core.Staleness `json:"staleness,omitempty"`
	Tags        []string        `json:"tags,omitempty"`
	// Extra holds upstream's top-level keys this build does not model,
	// verbatim, so a rewrite never drops them.
	Extra map[string]json.RawMessage `json:"-"`
}

// Execute is the execute block of a manifest.
type Execute struct {
	Shell string `json:"shell"`
	// Exactly one of Script, ScriptFile and ScriptObject is set in a
	// manifest; ScriptFile is CLI-only and inlined into Script before the
	// job is stored.
	Script           string `json:"script,omitempty"`
	ScriptFile       string `json:"script_file,omitempty"`
	ScriptObject     string `json:"script_object,omitempty"`
	Timeout          string `json:"timeout,omitempty"`
	RunAs            string `json:"run_as,omitempty"`
	Cwd              string `json:"cwd,omitempty"`
	BypassLocalLimit bool   `json:"bypass_local_limit,omitempty"`
	// Extra holds unknown keys of a stored execute block (tolerant read).
	Extra map[string]json.RawMessage `json:"-"`
}

// Known keys. Upstream's passthrough keys are accepted with any content.
var (
	topKeys = []string{"id", "version", "description", "execute", "staleness", "tags"}
	// upstreamKeys are upstream manifest keys kanade-go keeps but does not
	// interpret (SPEC-2 §3).
	upstreamKeys = []string{"inventory", "emit", "check", "collect", "client", "finalize", "origin",
		"require_approval", "aggregate", "feed", "tier"}
	executeKeys    = []string{"shell", "script", "script_file", "script_object", "timeout", "run_as", "cwd", "bypass_local_limit"}
	stalenessKeys  = []string{"mode", "max_cache_age"}
	objNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
)

// ValidID reports whether id can name a job: it becomes a KV key, an audit
// subject token and the Command id, so letters, digits, '-' and '_' only.
func ValidID(id string) error {
	if !core.ValidManifestID(id) {
		return fmt.Errorf("invalid job id %q: want 1-128 letters, digits, '-' or '_', starting with a letter or digit", id)
	}
	return nil
}

// ParseScriptObjectKey splits a scripts key "<name>/<version>".
func ParseScriptObjectKey(key string) (name, version string, err error) {
	name, version, ok := strings.Cut(key, "/")
	if !ok || !objNamePattern.MatchString(name) || !objNamePattern.MatchString(version) || strings.Contains(version, "/") {
		return "", "", fmt.Errorf("invalid script_object %q: want <name>/<version> (letters, digits, '.', '_', '-')", key)
	}
	return name, version, nil
}

// ScriptObjectKey is the scripts store key of name at version.
func ScriptObjectKey(name, version string) string { return name + "/" + version }

// TimeoutDuration is the effective script timeout.
func (j *Job) TimeoutDuration() time.Duration {
	if j.Execute.Timeout == "" {
		return DefaultTimeout
	}
	d, err := core.ParseDuration(j.Execute.Timeout)
	if err != nil || d <= 0 {
		return DefaultTimeout
	}
	return min(d, core.MaxTimeout)
}

// Validate checks the manifest's meaning (the strict key check happens in
// Parse). Errors name the field by its dotted path.
func (j *Job) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if j.ID == "" {
		add("id: required")
	} else if err := ValidID(j.ID); err != nil {
		add("id: %v", err)
	}
	switch {
	case j.Version == "":
		add("version: required")
	case strings.TrimSpace(j.Version) != j.Version || strings.ContainsAny(j.Version, "\r\n\t"):
		add("version: %q must not carry whitespace at its ends or line breaks", j.Version)
	case len(j.Version) > 128:
		add("version: longer than 128 characters")
	}
	e := &j.Execute
	switch e.Shell {
	case core.ShellPowerShell, core.ShellPwsh, core.ShellCmd, core.ShellSh:
	case "":
		add("execute.shell: required (powershell, pwsh, cmd or sh)")
	default:
		add("execute.shell: %q is not one of powershell, pwsh, cmd, sh", e.Shell)
	}
	n := 0
	for _, set := range []bool{e.Script != "", e.ScriptFile != "", e.ScriptObject != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		add("execute: give exactly one of script, script_file or script_object")
	}
	if e.Script != "" {
		if len(e.Script) > MaxInlineScript {
			add("execute.script: %d bytes, over the %d KiB inline limit; publish it with `kanade script publish` and use script_object", len(e.Script), MaxInlineScript>>10)
		}
		if !utf8.ValidString(e.Script) {
			add("execute.script: not valid UTF-8")
		}
	}
	if e.ScriptObject != "" {
		if _, _, err := ParseScriptObjectKey(e.ScriptObject); err != nil {
			add("execute.script_object: %v", err)
		}
	}
	if e.Timeout != "" {
		if d, err := core.ParseDuration(e.Timeout); err != nil || d < time.Second {
			add("execute.timeout: %q is not a duration of at least 1s (like 90s, 10m, 1h 30m)", e.Timeout)
		}
	}
	switch e.RunAs {
	case "", core.RunAsSystem, core.RunAsUser, core.RunAsSystemGUI:
	default:
		add("execute.run_as: %q is not one of system, user, system_gui", e.RunAs)
	}
	for i, t := range j.Tags {
		if strings.TrimSpace(t) == "" {
			add("tags[%d]: empty", i)
		}
	}
	return errors.Join(errs...)
}

// CommandOptions are the per-exec parts of a Command.
type CommandOptions struct {
	RequestID, ExecID string
	Jitter            time.Duration
	DeadlineAt        *time.Time
	// ScriptSHA256 is the digest of ScriptObject, resolved from the store.
	ScriptSHA256 string
}

// Command builds the Command exec publishes for j.
func (j *Job) Command(o CommandOptions) core.Command {
	execID := o.ExecID
	c := core.Command{
		ID:               j.ID,
		Version:          j.Version,
		RequestID:        o.RequestID,
		ExecID:           &execID,
		Shell:            j.Execute.Shell,
		Script:           j.Execute.Script,
		TimeoutSec:       uint64((j.TimeoutDuration() + time.Second - 1) / time.Second),
		RunAs:            j.Execute.RunAs,
		Cwd:              j.Execute.Cwd,
		DeadlineAt:       o.DeadlineAt,
		Staleness:        core.Staleness{Mode: core.StalenessCached},
		BypassLocalLimit: j.Execute.BypassLocalLimit,
	}
	if c.RunAs == "" {
		c.RunAs = core.RunAsSystem
	}
	if j.Staleness != nil {
		c.Staleness = *j.Staleness
	}
	if o.Jitter > 0 {
		s := uint64((o.Jitter + time.Second - 1) / time.Second)
		c.JitterSec = &s
	}
	if j.Execute.ScriptObject != "" {
		c.Script = ""
		c.ScriptObject = j.Execute.ScriptObject
		c.ScriptObjectSHA256 = o.ScriptSHA256
	}
	return c
}

// MarshalJSON writes the known fields and the kept upstream keys.
func (j Job) MarshalJSON() ([]byte, error) {
	type plain Job
	return manifest.MarshalWithExtra(plain(j), j.Extra)
}

// UnmarshalJSON reads tolerantly: unknown keys go to Extra.
func (j *Job) UnmarshalJSON(b []byte) error {
	type plain Job
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	extra, err := manifest.ExtraKeys(b, topKeys)
	if err != nil {
		return err
	}
	p.Extra = extra
	*j = Job(p)
	return nil
}

// MarshalJSON writes the known fields and any kept unknown keys.
func (e Execute) MarshalJSON() ([]byte, error) {
	type plain Execute
	return manifest.MarshalWithExtra(plain(e), e.Extra)
}

// UnmarshalJSON reads tolerantly: unknown keys go to Extra.
func (e *Execute) UnmarshalJSON(b []byte) error {
	type plain Execute
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	extra, err := manifest.ExtraKeys(b, executeKeys)
	if err != nil {
		return err
	}
	p.Extra = extra
	*e = Execute(p)
	return nil
}

// Decode reads a stored job (KV jobs) tolerantly.
func Decode(b []byte) (*Job, error) {
	var j Job
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("decode job: %w", err)
	}
	return &j, nil
}
