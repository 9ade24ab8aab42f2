package core

import (
	"fmt"
	"strings"
	"time"
)

// Stream names (SPEC §5).
const (
	StreamInventory = "INVENTORY"
	StreamResults   = "RESULTS"
	StreamExec      = "EXEC"
	StreamEvents    = "EVENTS"
	StreamAudit     = "AUDIT"
	StreamObsEvents = "OBS_EVENTS"
	// StreamNotifications holds end-user notifications (SPEC-2 §1).
	StreamNotifications = "NOTIFICATIONS"
)

// KV bucket names (SPEC §5).
const (
	BucketScriptCurrent = "script_current"
	BucketScriptStatus  = "script_status"
	BucketAgentsState   = "agents_state"
	BucketAgentConfig   = "agent_config"
	BucketAgentGroups   = "agent_groups"
	BucketSchedules     = "schedules"
	BucketJobs          = "jobs"
	BucketFleetConfig   = "fleet_config"
	BucketJobsYAML      = "jobs_yaml"
	BucketSchedulesYAML = "schedules_yaml"
	// Newest upstream's buckets (SPEC-2 §1).
	BucketAgentGroupsDerived = "agent_groups_derived"
	BucketAgentMeta          = "agent_meta"
	BucketGroupContacts      = "group_contacts"
	BucketServerSettings     = "server_settings"
	BucketNotificationsRead  = "notifications_read"
)

// KeyFreeze is the fleet_config key holding the fleet-wide change freeze
// (SPEC-2 §4): absent = not frozen.
const KeyFreeze = "freeze"

// Keys of fleet_config written by `kanade scheduler` (kanade-go's own;
// upstream's backend scheduler is a single process and needs neither).
// Agents follow only KeyFreeze, never the whole bucket, so the lease's
// renewals every few seconds wake nobody else.
const (
	// KeySchedulerLease holds the lease naming the one active scheduler
	// instance; standbys take it over when it stops being renewed.
	KeySchedulerLease = "scheduler_lease"
	// keySchedulerStatePrefix prefixes a backend schedule's firing
	// state: the last calendar tick handled (written by compare-and-set
	// before the fire, so no tick fires twice) and the pcs dispatched to
	// and not yet answered.
	keySchedulerStatePrefix = "scheduler_state."
)

// KeySchedulerState is the fleet_config key of schedule id's firing state.
func KeySchedulerState(scheduleID string) string { return keySchedulerStatePrefix + scheduleID }

// Object store names (SPEC §5).
const (
	ObjectAgentReleases = "agent_releases"
	ObjectAppPackages   = "app_packages"
	ObjectScripts       = "scripts"
	ObjectResultOutput  = "result_output"
	// ObjectCollections holds collected file bundles (SPEC-2 §1).
	ObjectCollections = "collections"
)

// Values of script_status entries (SPEC §6.4).
const (
	ScriptStatusRevoked = "REVOKED"
	ScriptStatusActive  = "ACTIVE"
)

// Keys of the agent_config bucket (SPEC §4 ConfigScope).
const (
	ConfigKeyGlobal      = "global"
	configKeyGroupPrefix = "groups."
	configKeyPCPrefix    = "pcs."
	// ConfigKeyLegacyTarget is upstream's pre-scope bare key; agents ignore it.
	ConfigKeyLegacyTarget = "target_version"
)

// ConfigKeyGroup is the agent_config key of group g's scope.
func ConfigKeyGroup(g string) string { return configKeyGroupPrefix + g }

// ConfigKeyPC is the agent_config key of pc's own scope.
func ConfigKeyPC(pc string) string { return configKeyPCPrefix + pc }

// ParseConfigKey splits an agent_config key into its scope kind ("global",
// "group", "pc") and name. ok is false for keys that are not scopes (the legacy
// bare target_version key, anything unknown).
func ParseConfigKey(key string) (kind, name string, ok bool) {
	switch {
	case key == ConfigKeyGlobal:
		return "global", "", true
	case strings.HasPrefix(key, configKeyGroupPrefix) && len(key) > len(configKeyGroupPrefix):
		return "group", key[len(configKeyGroupPrefix):], true
	case strings.HasPrefix(key, configKeyPCPrefix) && len(key) > len(configKeyPCPrefix):
		return "pc", key[len(configKeyPCPrefix):], true
	}
	return "", "", false
}

// Subjects (SPEC §3).
const (
	SubjectCommandsAll           = "commands.all"
	SubjectCommandsWildcard      = "commands.>"
	SubjectResultsWildcard       = "results.>"
	SubjectInventoryWildcard     = "inventory.>"
	SubjectEventsWildcard        = "events.>"
	SubjectAuditWildcard         = "audit.>"
	SubjectObsWildcard           = "obs.>"
	SubjectNotificationsWildcard = "notifications.>"
	SubjectHeartbeatWildcard     = "heartbeat.>"
	subjectCommandsGroup         = "commands.group."
	subjectCommandsPC            = "commands.pc."
	subjectResults               = "results."
	subjectEventsStarted         = "events.started."
	subjectHeartbeat             = "heartbeat."
	subjectAgents                = "agents."
	subjectLogsFetch             = "logs.fetch."
	subjectKill                  = "kill."
	subjectInventory             = "inventory."
	subjectObs                   = "obs."
	subjectAuditOperator         = "audit.operator."
	SubjectInventoryHWSuffix     = "hw"
	SubjectInventorySWSuffix     = "sw"
	SubjectInventoryNetSuffix    = "net"
)

// SubjectCommandsGroup is where commands for group g are published.
func SubjectCommandsGroup(g string) string { return subjectCommandsGroup + g }

// SubjectCommandsPC is where commands for one pc are published.
func SubjectCommandsPC(pc string) string { return subjectCommandsPC + pc }

// SubjectResults is where the results of one request are published.
func SubjectResults(requestID string) string { return subjectResults + requestID }

// SubjectEventsStarted announces that exec_id started on pc.
func SubjectEventsStarted(execID, pc string) string {
	return subjectEventsStarted + execID + "." + pc
}

// SubjectHeartbeat is pc's heartbeat subject.
func SubjectHeartbeat(pc string) string { return subjectHeartbeat + pc }

// PCFromHeartbeatSubject returns the pc id of a heartbeat.<pc> subject.
func PCFromHeartbeatSubject(subject string) (string, bool) {
	if !strings.HasPrefix(subject, subjectHeartbeat) || len(subject) == len(subjectHeartbeat) {
		return "", false
	}
	return subject[len(subjectHeartbeat):], true
}

// SubjectPing is the request/reply liveness probe of pc.
func SubjectPing(pc string) string { return subjectAgents + pc + ".ping" }

// subjectJSEventPrefix starts every JetStream event and advisory subject.
const subjectJSEventPrefix = "$JS.EVENT."

// IsJSEvent reports whether subject is a JetStream event or advisory (a
// stream created or deleted), not a message of a followed key.
func IsJSEvent(subject string) bool { return strings.HasPrefix(subject, subjectJSEventPrefix) }

// SubjectStreamDeletedAdvisory is the JetStream advisory the broker
// publishes when stream is deleted (nats-server's
// JSAdvisoryStreamDeletedPre); a KV bucket's stream is "KV_<bucket>".
func SubjectStreamDeletedAdvisory(stream string) string {
	return subjectJSEventPrefix + "ADVISORY.STREAM.DELETED." + stream
}

// SubjectStreamCreatedAdvisory is the JetStream advisory the broker
// publishes when stream is created (JSAdvisoryStreamCreatedPre).
func SubjectStreamCreatedAdvisory(stream string) string {
	return subjectJSEventPrefix + "ADVISORY.STREAM.CREATED." + stream
}

// KVStream is the stream behind KV bucket.
func KVStream(bucket string) string { return "KV_" + bucket }

// SubjectKVKey is the subject a KV put of key in bucket is published on;
// a core subscription on it sees every change without a consumer. key may
// be a wildcard pattern ("groups.*", ">").
func SubjectKVKey(bucket, key string) string { return "$KV." + bucket + "." + key }

// KVKeyFromSubject is the key of a $KV.<bucket>.<key> subject.
func KVKeyFromSubject(bucket, subject string) (string, bool) {
	p := "$KV." + bucket + "."
	if !strings.HasPrefix(subject, p) || len(subject) == len(p) {
		return "", false
	}
	return subject[len(p):], true
}

// SubjectDirectGetLast is the direct-get request subject (ADR-31) for the
// last message on subject in stream: one request, answered by any replica,
// without a consumer.
func SubjectDirectGetLast(stream, subject string) string {
	return "$JS.API.DIRECT.GET." + stream + "." + subject
}

// SubjectDirectGet is the direct-get request subject (ADR-31) of stream for
// requests that carry their selection in the body, such as a batch of the
// last message of every subject matching a wildcard ("multi_last").
func SubjectDirectGet(stream string) string { return "$JS.API.DIRECT.GET." + stream }

// SubjectStreamMsgGet is the message-get API request subject of stream, for
// streams without direct get.
func SubjectStreamMsgGet(stream string) string { return "$JS.API.STREAM.MSG.GET." + stream }

// SubjectLogsFetch is the request/reply log-tail subject of pc.
func SubjectLogsFetch(pc string) string { return subjectLogsFetch + pc }

// SubjectKill is the core subject that stops the run of execID.
func SubjectKill(execID string) string { return subjectKill + execID }

// SubjectInventory is inventory.<pc>.<kind> with kind hw, sw or net.
func SubjectInventory(pc, kind string) string { return subjectInventory + pc + "." + kind }

// SubjectObs is obs.<pc>, where an agent's observability events go (stream
// OBS_EVENTS, SPEC-2 §1).
func SubjectObs(pc string) string { return subjectObs + pc }

// SubjectAudit is audit.operator.<action>[.<target>].
func SubjectAudit(action, target string) string {
	if target == "" {
		return subjectAuditOperator + action
	}
	return subjectAuditOperator + action + "." + target
}

// CommandFilterSubjects lists the EXEC subjects pc listens to, in the order
// commands.all, commands.pc.<pc>, then one commands.group.<g> per group,
// sorted and unique (empty names dropped). As upstream does, the list is a
// function of the membership set: the broker refuses overlapping filter
// subjects, and an equal set must give an equal list so an unchanged
// membership never churns the durable consumer.
func CommandFilterSubjects(pc string, groups []string) []string {
	groups = NormalizeGroups(groups)
	out := make([]string, 0, 2+len(groups))
	out = append(out, SubjectCommandsAll, SubjectCommandsPC(pc))
	for _, g := range groups {
		out = append(out, SubjectCommandsGroup(g))
	}
	return out
}

// ReplayInactiveThreshold is how long a replay consumer may go without its
// agent before the broker deletes it: EXEC's max_age (7 days) plus a day.
const ReplayInactiveThreshold = 8 * 24 * time.Hour

// agentInboxPrefix starts every agent's inbox subjects.
const agentInboxPrefix = "_INBOX.agent_"

// AgentInboxPrefix is the inbox prefix pc's agent connects with
// (nats.CustomInboxPrefix): _INBOX.agent_<pc>, the pc id sanitised as in
// ReplayConsumerName so it stays one token. Every reply the agent asks for
// (JetStream API answers, publish acks, object chunks) arrives under it, so
// the agent role can be limited to AgentInboxSubjects(pc) and one agent
// cannot read another's replies. It stays under _INBOX., so a broker whose
// roles still allow _INBOX.> keeps serving upgraded agents, and it cannot
// be a random inbox of another client (those have no '_').
func AgentInboxPrefix(pc string) string { return agentInboxPrefix + SanitizeToken(pc) }

// AgentInboxSubjects is what pc's agent subscribes to for its replies.
func AgentInboxSubjects(pc string) string { return AgentInboxPrefix(pc) + ".>" }

// ReplayConsumerName is the durable replay consumer of pc on EXEC:
// agent_replay_<pc> with every character outside [A-Za-z0-9_-] replaced by _.
func ReplayConsumerName(pc string) string {
	return "agent_replay_" + SanitizeToken(pc)
}

// SanitizeToken replaces every character outside [A-Za-z0-9_-] with '_'.
func SanitizeToken(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// ValidToken reports whether s can stand as one token of a subject: not empty,
// no '.', no wildcard and no whitespace. PC ids and group names must be valid
// tokens to be addressed.
func ValidToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// MaxManifestID is the longest job or schedule id.
const MaxManifestID = 128

// ValidManifestID reports whether id can name a job or a schedule: it
// becomes a KV key, an audit subject token, the Command id and part of the
// local completion key, so 1-128 letters, digits, '-' or '_', starting with
// a letter or digit. (A loop, not a regexp: `{0,127}` compiles to some
// 118 KB that every agent process would keep alive.)
func ValidManifestID(id string) bool {
	if id == "" || len(id) > MaxManifestID {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '-' || c == '_') && i > 0:
		default:
			return false
		}
	}
	return true
}

// ValidKVKey reports whether s can be a KV key (the gates look a command's
// id up in script_current and script_status): letters, digits and -/_=.
// only, with no empty token (no leading, trailing or doubled '.').
func ValidKVKey(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '-', r == '/', r == '_', r == '=', r == '.':
		default:
			return false
		}
	}
	return true
}

// Shells accepted in Command.shell.
const (
	ShellPowerShell = "powershell"
	ShellPwsh       = "pwsh"
	ShellCmd        = "cmd"
	ShellSh         = "sh"
)

// Values of Command.run_as.
const (
	RunAsSystem    = "system"
	RunAsUser      = "user"
	RunAsSystemGUI = "system_gui"
)

// AdhocManifestID and AdhocVersion identify commands published by `kanade run`.
const (
	AdhocManifestID = "adhoc-run"
	AdhocVersion    = "0.0.0"
)

// AuditActionExec is the audit action of `kanade exec` and of the
// scheduler's fires (audit.operator.exec.<job id>, as upstream). Its payload
// is the exec record `kanade exec status` reads back (internal/execjob).
const AuditActionExec = "exec"

// Synthetic and special exit codes (SPEC §4, SPEC-2 §1).
const (
	ExitKilled = -1
	// ExitInterrupted: the agent restarted while the script ran; its
	// outcome is unknown and it is not run again.
	ExitInterrupted = 121
	// ExitOSUnsupported: a schedule needs something this OS cannot sense.
	ExitOSUnsupported   = 122
	ExitSignatureDenied = 123
	ExitVersionPin      = 124
	ExitDeadline        = 125
	ExitRevoked         = 126
	ExitStaleness       = 127
)

// Command signature headers (SPEC-2 §5), upstream's names. A message with
// none of them is unsigned; one with some but not all is malformed.
const (
	// HeaderSig is the standard padded base64 of the 64-byte Ed25519
	// signature over the 8-byte big-endian signing time (Unix ms) and the
	// message body.
	HeaderSig = "Kanade-Sig"
	// HeaderSigKID names the key that signed (not covered by the signature:
	// a rewritten kid only selects a key under which verification fails).
	HeaderSigKID = "Kanade-Sig-Kid"
	// HeaderSigAlg is the algorithm, SigAlgEd25519.
	HeaderSigAlg = "Kanade-Sig-Alg"
	// HeaderSigAt is the signing time in decimal Unix milliseconds; it is
	// covered by the signature.
	HeaderSigAt = "Kanade-Sig-At"
	// SigAlgEd25519 is the only algorithm emitted or accepted.
	SigAlgEd25519 = "ed25519"
)

// Command protocols an agent reports in Heartbeat.command_protocols
// (SPEC-2 §1, §5): the bare signed Command, and the v2 envelope whose kind
// is CommandProtocolV2.
const (
	CommandProtocolLegacy = "legacy"
	CommandProtocolV2     = "kanade.command.v2"
)

// ExitCodeUpdate is the agent's exit code after staging a self-update, so the
// service manager restarts it on the new build.
const ExitCodeUpdate = 64

// Object key suffixes for overflowed output in result_output.
const (
	OutputStdout = "stdout"
	OutputStderr = "stderr"
)

// ResultInlineMax is the longest stdout or stderr carried inline in an
// ExecResult; a longer field goes to result_output (SPEC §6.6).
const ResultInlineMax = 256 << 10

// ResultOutputKey is the result_output object holding one overflowed stream.
func ResultOutputKey(requestID, stream string) string { return requestID + "/" + stream }

// MaxReleaseVersionLen bounds an agent release version label.
const MaxReleaseVersionLen = 128

// ValidReleaseVersion checks a version label used in agent_releases keys and
// as target_version: 1–128 characters from [A-Za-z0-9._+-], not starting with
// '.' or '-', and no "..". The agent also builds a staging path from it, so it
// must never name a directory or escape one.
func ValidReleaseVersion(v string) error {
	switch {
	case v == "":
		return fmt.Errorf("version is empty")
	case len(v) > MaxReleaseVersionLen:
		return fmt.Errorf("version %q is longer than %d characters", v, MaxReleaseVersionLen)
	case v[0] == '.' || v[0] == '-':
		return fmt.Errorf("version %q must not start with %q", v, v[0])
	case strings.Contains(v, ".."):
		return fmt.Errorf("version %q must not contain %q", v, "..")
	}
	for _, r := range v {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '+', r == '-':
		default:
			return fmt.Errorf("version %q contains %q (allowed: letters, digits, '.', '_', '+', '-')", v, r)
		}
	}
	return nil
}
