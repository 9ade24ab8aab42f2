package core

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"
)

// Now is the wire clock: the current instant in UTC, as every wire time is.
func Now() time.Time { return time.Now().UTC() }

// Staleness modes of Command.staleness.
const (
	StalenessCached    = "cached"
	StalenessUnchecked = "unchecked"
	StalenessStrict    = "strict"
)

// Staleness is the Command's policy for running on cached gate data while the
// agent has been cut off from the broker.
type Staleness struct {
	Mode        string    `json:"mode"`
	MaxCacheAge *Duration `json:"max_cache_age,omitempty"`
	// InvalidMaxCacheAge holds a strict max_cache_age that did not parse
	// (SPEC-2 §1): the command is not dropped; MaxCacheAge reads 0 s and
	// the staleness gate answers it with 127.
	InvalidMaxCacheAge string `json:"-"`
}

// ErrStrictWithoutMaxAge is returned when a strict staleness has no max_cache_age.
var ErrStrictWithoutMaxAge = errors.New(`staleness mode "strict" needs max_cache_age`)

// UnmarshalJSON validates the mode and the strict rule.
func (s *Staleness) UnmarshalJSON(b []byte) error {
	var r struct {
		Mode        string          `json:"mode"`
		MaxCacheAge json.RawMessage `json:"max_cache_age"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	out := Staleness{Mode: r.Mode}
	switch r.Mode {
	case StalenessCached, StalenessUnchecked:
	case StalenessStrict:
		if len(r.MaxCacheAge) == 0 || string(r.MaxCacheAge) == "null" {
			return ErrStrictWithoutMaxAge
		}
		var d Duration
		if err := json.Unmarshal(r.MaxCacheAge, &d); err != nil {
			// SPEC-2 §1: answered with 127, not dropped.
			zero := Duration(0)
			out.MaxCacheAge, out.InvalidMaxCacheAge = &zero, string(r.MaxCacheAge)
		} else {
			out.MaxCacheAge = &d
		}
	default:
		return fmt.Errorf("unknown staleness mode %q (want cached, unchecked or strict)", r.Mode)
	}
	*s = out
	return nil
}

// Command is what operators publish on commands.* (SPEC §4).
type Command struct {
	ID         string     `json:"id"`
	Version    string     `json:"version"`
	RequestID  string     `json:"request_id"`
	ExecID     *string    `json:"exec_id"`
	Shell      string     `json:"shell"`
	Script     string     `json:"script"`
	TimeoutSec uint64     `json:"timeout_secs"`
	JitterSec  *uint64    `json:"jitter_secs"`
	RunAs      string     `json:"run_as"`
	Cwd        string     `json:"cwd,omitempty"`
	DeadlineAt *time.Time `json:"deadline_at,omitempty"`
	Staleness  Staleness  `json:"staleness"`
	// ScriptObject is a key <name>/<version> in object store scripts; with
	// it Script is "" and ScriptObjectSHA256 holds the script's digest
	// (SPEC-2 §1).
	ScriptObject       string `json:"script_object,omitempty"`
	ScriptObjectSHA256 string `json:"script_object_sha256,omitempty"`
	// BypassLocalLimit: the command does not wait for a run slot.
	BypassLocalLimit bool `json:"bypass_local_limit,omitempty"`
}

// MaxTimeout caps timeout_secs so a huge value cannot overflow time.Duration;
// a year is longer than any script should live.
const MaxTimeout = 365 * 24 * time.Hour

// Timeout is the effective timeout: max(timeout_secs, 1) seconds, capped at MaxTimeout.
func (c *Command) Timeout() time.Duration {
	n := c.TimeoutSec
	if n < 1 {
		n = 1
	}
	if n > uint64(MaxTimeout/time.Second) {
		return MaxTimeout
	}
	return time.Duration(n) * time.Second
}

// Jitter is the upper bound of the random start delay, zero when unset.
func (c *Command) Jitter() time.Duration {
	if c.JitterSec == nil || *c.JitterSec == 0 {
		return 0
	}
	if *c.JitterSec > uint64(MaxTimeout/time.Second) {
		return MaxTimeout
	}
	return time.Duration(*c.JitterSec) * time.Second
}

// ExecIDValue is exec_id, or "" when unset.
func (c *Command) ExecIDValue() string {
	if c.ExecID == nil {
		return ""
	}
	return *c.ExecID
}

// UnmarshalJSON applies the lenient decode rules: unknown fields ignored, the
// old job_id name for exec_id, run_as defaulting to system, staleness to cached,
// and the required fields present.
func (c *Command) UnmarshalJSON(b []byte) error {
	type plain Command
	var r struct {
		plain
		JobID      *string         `json:"job_id"`
		RawTimeout json.RawMessage `json:"timeout_secs"`
		RawStale   json.RawMessage `json:"staleness"`
		// version and script may be empty strings but must be present,
		// as upstream's serde decoder requires.
		RawVersion json.RawMessage `json:"version"`
		RawScript  json.RawMessage `json:"script"`
	}
	// Decode staleness separately so a null staleness means the default.
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	p := r.plain
	if p.ExecID == nil && r.JobID != nil {
		p.ExecID = r.JobID
	}
	if len(r.RawStale) == 0 || string(r.RawStale) == "null" {
		p.Staleness = Staleness{Mode: StalenessCached}
	} else if err := json.Unmarshal(r.RawStale, &p.Staleness); err != nil {
		return fmt.Errorf("staleness: %w", err)
	}
	if p.RunAs == "" {
		p.RunAs = RunAsSystem
	}
	var missing []string
	if p.ID == "" {
		missing = append(missing, "id")
	}
	if err := decodeRequiredString(r.RawVersion, &p.Version); err != nil {
		return fmt.Errorf("version: %w", err)
	} else if len(r.RawVersion) == 0 {
		missing = append(missing, "version")
	}
	if p.RequestID == "" {
		missing = append(missing, "request_id")
	}
	if p.Shell == "" {
		missing = append(missing, "shell")
	}
	if err := decodeRequiredString(r.RawScript, &p.Script); err != nil {
		return fmt.Errorf("script: %w", err)
	} else if len(r.RawScript) == 0 {
		missing = append(missing, "script")
	}
	if len(r.RawTimeout) == 0 || string(r.RawTimeout) == "null" {
		missing = append(missing, "timeout_secs")
	} else if err := json.Unmarshal(r.RawTimeout, &p.TimeoutSec); err != nil {
		return fmt.Errorf("timeout_secs: %w", err)
	}
	if len(missing) > 0 {
		return fmt.Errorf("command is missing required field(s): %v", missing)
	}
	switch p.Shell {
	case ShellPowerShell, ShellPwsh, ShellCmd, ShellSh:
	default:
		return fmt.Errorf("unknown shell %q (want powershell, pwsh, cmd or sh)", p.Shell)
	}
	switch p.RunAs {
	case RunAsSystem, RunAsUser, RunAsSystemGUI:
	default:
		return fmt.Errorf("unknown run_as %q (want system, user or system_gui)", p.RunAs)
	}
	if p.DeadlineAt != nil {
		t := p.DeadlineAt.UTC()
		if y := t.Year(); y < 0 || y > 9999 {
			return fmt.Errorf("deadline_at %s is out of range", p.DeadlineAt.Format(time.RFC3339))
		}
		p.DeadlineAt = &t
	}
	*c = Command(p)
	return nil
}

// decodeRequiredString decodes a present JSON string into dst; a missing
// field (empty raw) is left for the caller to report, null is an error.
func decodeRequiredString(raw json.RawMessage, dst *string) error {
	if len(raw) == 0 {
		return nil
	}
	if string(raw) == "null" {
		return errors.New("must be a string, not null")
	}
	return json.Unmarshal(raw, dst)
}

// wireTime is t in UTC, as every wire time is (SPEC §4), unless the UTC
// form falls outside what RFC 3339 can write; then t is kept as it is.
func wireTime(t time.Time) time.Time {
	u := t.UTC()
	if y := u.Year(); y < 0 || y > 9999 {
		return t
	}
	return u
}

// MarshalJSON fills the defaults so an encoded Command is always complete.
func (c Command) MarshalJSON() ([]byte, error) {
	type plain Command
	p := plain(c)
	if p.RunAs == "" {
		p.RunAs = RunAsSystem
	}
	if p.Staleness.Mode == "" {
		p.Staleness.Mode = StalenessCached
	}
	if p.DeadlineAt != nil {
		t := wireTime(*p.DeadlineAt)
		p.DeadlineAt = &t
	}
	return json.Marshal(p)
}

// ScriptSHA256 is the script_object_sha256 of script bytes b: lowercase hex
// of their SHA-256 (SPEC-2 §1).
func ScriptSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// DecodeCommand decodes an untrusted Command payload.
func DecodeCommand(b []byte) (*Command, error) {
	var c Command
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// ExecResult is published on results.<request_id> (SPEC §4).
type ExecResult struct {
	ResultID  string `json:"result_id"`
	RequestID string `json:"request_id"`
	ExecID    string `json:"exec_id,omitempty"`
	PCID      string `json:"pc_id"`
	ExitCode  int    `json:"exit_code"`
	// Skipped (SPEC-2 §1) is always sent: true only for a synthetic result
	// of a script the agent did not run because of policy or the OS
	// (SkippedExit); false for everything that ran, however it ended.
	Skipped      bool      `json:"skipped"`
	Stdout       string    `json:"stdout"`
	Stderr       string    `json:"stderr"`
	StartedAt    time.Time `json:"started_at"`
	FinishedAt   time.Time `json:"finished_at"`
	ManifestID   string    `json:"manifest_id,omitempty"`
	StdoutObject string    `json:"stdout_object,omitempty"`
	StderrObject string    `json:"stderr_object,omitempty"`
	// ParentResultID is reserved for hooks (SPEC-2 §1).
	ParentResultID string `json:"parent_result_id,omitempty"`
}

// SkippedExit reports whether a synthetic result with exit code code is a
// skip (SPEC-2 §1): 122 (a schedule needs what this OS cannot sense) and
// 124–127 (the gates). Never 121 or 123, and never a script's own exit code.
func SkippedExit(code int) bool {
	switch code {
	case ExitOSUnsupported, ExitVersionPin, ExitDeadline, ExitRevoked, ExitStaleness:
		return true
	}
	return false
}

// ObsEvent is an observability event on obs.<pc> (SPEC-2 §1).
// EventRecordID is sent as null when empty; Payload is any JSON.
type ObsEvent struct {
	PCID          string          `json:"pc_id"`
	At            time.Time       `json:"at"`
	Kind          string          `json:"kind"`
	Source        string          `json:"source"`
	EventRecordID *string         `json:"event_record_id"`
	Payload       json.RawMessage `json:"payload"`
}

// UnmarshalJSON decodes an ObsEvent, keeping its payload compacted so a
// decoded event encodes to the same bytes however the sender spaced it.
func (e *ObsEvent) UnmarshalJSON(b []byte) error {
	type plain ObsEvent
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	if len(p.Payload) > 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, p.Payload); err != nil {
			return err
		}
		p.Payload = buf.Bytes()
	}
	*e = ObsEvent(p)
	return nil
}

// The observability events the agent emits (SPEC-2 §1).
const (
	ObsKindAgentOnline     = "agent_online"
	ObsSourceStartup       = "agent:startup"
	ObsKindAgentUpdate     = "agent_update"
	ObsSourceSelfUpdate    = "agent:self_update"
	ObsStartupRecordPrefix = "startup_"
)

// EventStarted is published on events.started.<exec_id>.<pc> (SPEC §4).
type EventStarted struct {
	ResultID   string    `json:"result_id"`
	RequestID  string    `json:"request_id"`
	ExecID     string    `json:"exec_id"`
	PCID       string    `json:"pc_id"`
	StartedAt  time.Time `json:"started_at"`
	ManifestID string    `json:"manifest_id"`
	Version    string    `json:"version"`
}

// OS families reported in Heartbeat.os_family.
const (
	OSWindows = "windows"
	OSLinux   = "linux"
	OSMacOS   = "macos"
)

// Heartbeat is published on heartbeat.<pc> and answers agents.<pc>.ping.
type Heartbeat struct {
	PCID                  string    `json:"pc_id"`
	At                    time.Time `json:"at"`
	AgentVersion          string    `json:"agent_version"`
	Hostname              string    `json:"hostname,omitempty"`
	OSFamily              string    `json:"os_family,omitempty"`
	AgentCPUPct           *float64  `json:"agent_cpu_pct,omitempty"`
	AgentRSSBytes         *uint64   `json:"agent_rss_bytes,omitempty"`
	AgentDiskReadBytes    *uint64   `json:"agent_disk_read_bytes,omitempty"`
	AgentDiskWrittenBytes *uint64   `json:"agent_disk_written_bytes,omitempty"`
	// OutboxSetAside counts, per outbox ("results", "events"), the entries
	// the agent set aside on disk and will not send: corrupt files and
	// entries the broker refused for good. Our extension (upstream ignores
	// unknown fields); omitted when nothing is set aside.
	OutboxSetAside SetAsideCounts `json:"outbox_set_aside,omitempty"`
	// QuarantinedVersions are the versions this agent's boot sentinel
	// rolled back after they never started healthy, which it does not
	// install again until the target changes (SPEC-2 §1, upstream #582).
	// Omitted when none, as upstream does; older agents never send it.
	QuarantinedVersions VersionList `json:"quarantined_versions,omitempty"`
	// CommandKeys is the agent's command-signing keyring as it stands in
	// memory, "<kid>:<fingerprint16>" sorted by kid (SPEC-2 §1, §5): an
	// empty list (sent as []) when the ring is empty, absent when unknown
	// (an agent without signing support).
	CommandKeys StringList `json:"command_keys,omitzero"`
	// Enforcing says whether the agent refuses unsigned or unverified
	// commands now (requested locally and a non-empty ring).
	Enforcing *bool `json:"enforcing,omitempty"`
	// CommandProtocols are the command forms the agent verifies:
	// ["legacy","kanade.command.v2"].
	CommandProtocols StringList `json:"command_protocols,omitzero"`
}

// StringList is a list of strings on the wire that keeps an empty list
// apart from an absent one (Heartbeat.command_keys is [] for an empty
// keyring): nil is omitted (omitzero), an empty non-nil list encodes as [].
type StringList []string

// UnmarshalJSON is tolerant: a value that is not an array of strings keeps
// only its string entries (null and non-arrays decode as absent), so a
// peer's broken field never fails the whole heartbeat.
func (l *StringList) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if json.Unmarshal(b, &raw) != nil || raw == nil {
		*l = nil
		return nil
	}
	out := StringList{}
	for _, r := range raw {
		var v string
		if json.Unmarshal(r, &v) == nil {
			out = append(out, v)
		}
	}
	*l = out
	return nil
}

// VersionList is a list of version labels on the wire
// (Heartbeat.quarantined_versions).
type VersionList []string

// UnmarshalJSON is tolerant: a value that is not an array decodes as an
// empty list and entries that are not non-empty strings are dropped, so a
// peer's broken field never fails the whole heartbeat.
func (l *VersionList) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if json.Unmarshal(b, &raw) != nil {
		*l = nil
		return nil
	}
	var out VersionList
	for _, r := range raw {
		var v string
		if json.Unmarshal(r, &v) == nil && v != "" {
			out = append(out, v)
		}
	}
	*l = out
	return nil
}

// Outbox names used as keys of Heartbeat.outbox_set_aside.
const (
	OutboxResults = "results"
	OutboxEvents  = "events"
	OutboxObs     = "obs"
)

// SetAsideCounts is Heartbeat.outbox_set_aside: entries set aside per
// outbox. Only positive counts are kept.
type SetAsideCounts map[string]int

// Total is the number of entries set aside across outboxes.
func (c SetAsideCounts) Total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// UnmarshalJSON is tolerant: a value that is not an object of counts (a
// peer's newer or broken shape) decodes as nothing set aside instead of
// failing the whole heartbeat; counts that are not positive integers are
// dropped.
func (c *SetAsideCounts) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if json.Unmarshal(b, &raw) != nil {
		*c = nil
		return nil
	}
	out := SetAsideCounts{}
	for k, v := range raw {
		var n int
		if json.Unmarshal(v, &n) == nil && n > 0 {
			out[k] = n
		}
	}
	if len(out) == 0 {
		out = nil
	}
	*c = out
	return nil
}

// AgentGroups is the value of agent_groups/<pc>.
type AgentGroups struct {
	Groups []string `json:"groups"`
}

// Normalize sorts the groups and removes duplicates and empty names.
func (g *AgentGroups) Normalize() {
	g.Groups = NormalizeGroups(g.Groups)
}

// MarshalJSON writes the groups sorted and unique, and an empty list as []
// rather than null (upstream's decoder rejects a null list).
func (g AgentGroups) MarshalJSON() ([]byte, error) {
	type plain AgentGroups
	return json.Marshal(plain{Groups: NormalizeGroups(g.Groups)})
}

// UnmarshalJSON reads the groups and normalises them, so a row written by a
// careless writer still reads sorted and unique.
func (g *AgentGroups) UnmarshalJSON(b []byte) error {
	type plain AgentGroups
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	g.Groups = NormalizeGroups(p.Groups)
	return nil
}

// NormalizeGroups returns the groups sorted and unique, never nil.
func NormalizeGroups(in []string) []string {
	out := make([]string, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, g := range in {
		if g == "" || seen[g] {
			continue
		}
		seen[g] = true
		out = append(out, g)
	}
	sort.Strings(out)
	return out
}

// ConfigScope is the value of one agent_config key. Durations stay strings so
// a malformed value decodes and then falls back to the default with a log line
// instead of rejecting the whole scope (SPEC §4).
type ConfigScope struct {
	TargetVersion       *string `json:"target_version,omitempty"`
	TargetVersionJitter *string `json:"target_version_jitter,omitempty"`
	HeartbeatInterval   *string `json:"heartbeat_interval,omitempty"`
	InventoryInterval   *string `json:"inventory_interval,omitempty"`
	InventoryJitter     *string `json:"inventory_jitter,omitempty"`
	InventoryEnabled    *bool   `json:"inventory_enabled,omitempty"`
	// MaxLocalConcurrent is upstream's run-slot count (SPEC-2 §1).
	MaxLocalConcurrent *int `json:"max_local_concurrent,omitempty"`
}

// Disk is one entry of HwInventory.disks.
type Disk struct {
	DeviceID   string  `json:"device_id"`
	SizeBytes  uint64  `json:"size_bytes"`
	FreeBytes  uint64  `json:"free_bytes"`
	FileSystem *string `json:"file_system"`
}

// HwInventory is published on inventory.<pc>.hw and kept in AgentState.
type HwInventory struct {
	PCID        string    `json:"pc_id"`
	Hostname    string    `json:"hostname"`
	OSName      string    `json:"os_name"`
	OSVersion   string    `json:"os_version"`
	OSBuild     *string   `json:"os_build"`
	CPUModel    string    `json:"cpu_model"`
	CPUCores    uint32    `json:"cpu_cores"`
	RAMBytes    uint64    `json:"ram_bytes"`
	Disks       []Disk    `json:"disks"`
	CollectedAt time.Time `json:"collected_at"`
}

// MarshalJSON keeps disks an array, never null.
func (h HwInventory) MarshalJSON() ([]byte, error) {
	type plain HwInventory
	p := plain(h)
	if p.Disks == nil {
		p.Disks = []Disk{}
	}
	p.CollectedAt = wireTime(p.CollectedAt)
	return json.Marshal(p)
}

// AgentState is the value of agents_state/<pc>: the latest heartbeat fields,
// the latest hardware inventory and when the row was written.
type AgentState struct {
	Heartbeat
	Inventory *HwInventory `json:"inventory"`
	UpdatedAt time.Time    `json:"updated_at"`
}

// LogsFetchRequest is the body of a logs.fetch.<pc> request.
type LogsFetchRequest struct {
	TailLines int `json:"tail_lines,omitempty"`
}

// DefaultLogTailLines is used when a logs.fetch request names no count.
const DefaultLogTailLines = 500

// MaxLogsReply caps a logs.fetch reply; the tail is kept.
const MaxLogsReply = 800 * 1024

// AuditActionAgentRollout is the audit action of `kanade agent rollout`
// (SPEC-2 §1).
const AuditActionAgentRollout = "agent_rollout"

// AuditEvent is published best effort on audit.operator.<action>[.<target>].
type AuditEvent struct {
	Actor  string `json:"actor"`
	Action string `json:"action"`
	// Target is null when the action has none (SPEC-2 §1).
	Target     *string         `json:"target"`
	Payload    json.RawMessage `json:"payload,omitempty"`
	OccurredAt time.Time       `json:"occurred_at"`
}

// SoftwareItem is one installed package or application in SwInventory.
type SoftwareItem struct {
	Name        string `json:"name"`
	Version     string `json:"version"`
	Publisher   string `json:"publisher,omitempty"`
	InstallDate string `json:"install_date,omitempty"`
}

// SwInventory is published on inventory.<pc>.sw: the installed software.
type SwInventory struct {
	PCID        string         `json:"pc_id"`
	Software    []SoftwareItem `json:"software"`
	CollectedAt time.Time      `json:"collected_at"`
}

// MarshalJSON keeps software an array, never null.
func (s SwInventory) MarshalJSON() ([]byte, error) {
	type plain SwInventory
	p := plain(s)
	if p.Software == nil {
		p.Software = []SoftwareItem{}
	}
	p.CollectedAt = wireTime(p.CollectedAt)
	return json.Marshal(p)
}

// NetInterface is one network interface in NetInventory; addrs are CIDR
// strings ("192.0.2.10/24", "fe80::1/64").
type NetInterface struct {
	Name  string   `json:"name"`
	MAC   string   `json:"mac"`
	Addrs []string `json:"addrs"`
	Up    bool     `json:"up"`
}

// NetInventory is published on inventory.<pc>.net: the network interfaces.
type NetInventory struct {
	PCID        string         `json:"pc_id"`
	Interfaces  []NetInterface `json:"interfaces"`
	CollectedAt time.Time      `json:"collected_at"`
}

// MarshalJSON keeps interfaces and every addrs an array, never null.
func (n NetInventory) MarshalJSON() ([]byte, error) {
	type plain NetInventory
	p := plain(n)
	ifs := make([]NetInterface, len(p.Interfaces))
	for i, it := range p.Interfaces {
		if it.Addrs == nil {
			it.Addrs = []string{}
		}
		ifs[i] = it
	}
	p.Interfaces = ifs
	p.CollectedAt = wireTime(p.CollectedAt)
	return json.Marshal(p)
}
