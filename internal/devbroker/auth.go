package devbroker

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/kanadehq/kanade-go/internal/core"
)

// AuthMode is how `kanade devbroker --auth` makes clients authenticate.
type AuthMode string

// Auth modes of the dev broker.
const (
	// AuthNone lets any client in with every permission.
	AuthNone AuthMode = "none"
	// AuthToken requires one bearer token (KANADE_NATS_TOKEN).
	AuthToken AuthMode = "token"
	// AuthRoles requires a user and password per role, each limited to what
	// its role needs (docs/roles/kanade-roles.conf).
	AuthRoles AuthMode = "roles"
)

// AuthModes lists the modes in the order help text shows them.
var AuthModes = []AuthMode{AuthNone, AuthToken, AuthRoles}

// ParseAuthMode reads an --auth value.
func ParseAuthMode(s string) (AuthMode, error) {
	m := AuthMode(strings.ToLower(strings.TrimSpace(s)))
	if slices.Contains(AuthModes, m) {
		return m, nil
	}
	return "", fmt.Errorf("unknown auth mode %q: want none, token or roles", s)
}

// Role user names. Agents log in as AgentUser(pc).
const (
	UserOperator = "operator"
	UserReadonly = "readonly"
	agentPrefix  = "agent-"
)

// AgentUser is the user name of pc's agent: agent-<pc>.
func AgentUser(pc string) string { return agentPrefix + pc }

// Credential is one user's name and password.
type Credential struct {
	User     string
	Password string
}

// AgentCredential is the credential of the agent of one pc.
type AgentCredential struct {
	PC string
	Credential
}

// Roles are the users of `--auth roles`: one operator, one read-only user
// and one agent user per pc, each with its role's permissions.
type Roles struct {
	Operator Credential
	Readonly Credential
	Agents   []AgentCredential
}

// NewRoles makes the role users for pcs with fresh random passwords.
func NewRoles(pcs []string) (*Roles, error) {
	r := &Roles{Operator: Credential{User: UserOperator}, Readonly: Credential{User: UserReadonly}}
	for _, pc := range pcs {
		if err := checkPC(pc); err != nil {
			return nil, err
		}
		r.Agents = append(r.Agents, AgentCredential{PC: pc, Credential: Credential{User: AgentUser(pc)}})
	}
	for _, p := range r.passwords() {
		pw, err := NewSecret()
		if err != nil {
			return nil, err
		}
		*p = pw
	}
	return r, nil
}

func (r *Roles) passwords() []*string {
	out := []*string{&r.Operator.Password, &r.Readonly.Password}
	for i := range r.Agents {
		out = append(out, &r.Agents[i].Password)
	}
	return out
}

// Agent returns the credential of pc's agent.
func (r *Roles) Agent(pc string) (Credential, bool) {
	for _, a := range r.Agents {
		if a.PC == pc {
			return a.Credential, true
		}
	}
	return Credential{}, false
}

// Users are the nats-server users of the roles, each with its permissions.
func (r *Roles) Users() []*server.User {
	out := []*server.User{
		{Username: r.Operator.User, Password: r.Operator.Password, Permissions: OperatorPermissions()},
		{Username: r.Readonly.User, Password: r.Readonly.Password, Permissions: ReadonlyPermissions()},
	}
	for _, a := range r.Agents {
		out = append(out, &server.User{Username: a.User, Password: a.Password, Permissions: AgentPermissions(a.PC)})
	}
	return out
}

// NewSecret returns 24 random bytes, base64url: a password or token with no
// character a shell or URL would mangle.
func NewSecret() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate a secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// checkPC refuses a pc id that would widen a permission: wildcards and
// whitespace in it would make agent-<pc>'s subjects match other pcs'.
func checkPC(pc string) error {
	if pc == "" || strings.ContainsAny(pc, "*> \t\r\n\x00") || strings.HasPrefix(pc, ".") || strings.HasSuffix(pc, ".") || strings.Contains(pc, "..") {
		return fmt.Errorf("pc id %q cannot be scoped in a permission (no '*', '>', whitespace or empty tokens)", pc)
	}
	return nil
}

// Subject building blocks of the JetStream API. These are nats-server's
// names, not kanade's; kanade's own names come from internal/core.
const (
	jsAPI = "$JS.API."
	// allowResponsesTTL is how long an agent may answer a request (ping,
	// logs.fetch) or flow-control message it received.
	allowResponsesTTL = 2 * time.Minute
)

func kvStream(bucket string) string  { return "KV_" + bucket }
func objStream(store string) string  { return "OBJ_" + store }
func kvSubject(bucket string) string { return "$KV." + bucket + "." }
func objSubject(store string) string { return "$O." + store + "." }

// kvWatch is the create subject of an ordered consumer (nats.go Watch) on
// bucket filtered to key (">" for every key): the consumer name is random,
// the filter is part of the subject, and the server checks it against the
// request's own filter, so the filter token scopes what can be read.
func kvWatch(bucket, key string) string {
	return jsAPI + "CONSUMER.CREATE." + kvStream(bucket) + ".*." + kvSubject(bucket) + key
}

// kvRead lets a client open bucket (STREAM.INFO) and get keys matching key
// directly (DIRECT.GET by subject, the nats.go KeyValue Get path).
func kvRead(bucket, key string) []string {
	return []string{
		jsAPI + "STREAM.INFO." + kvStream(bucket),
		jsAPI + "DIRECT.GET." + kvStream(bucket) + "." + kvSubject(bucket) + key,
	}
}

// AgentPermissions are the permissions of pc's agent: publish its own
// heartbeat, results, events, inventory and agents_state row; read (never
// write) its configuration, groups and the script gates; consume only its
// own replay consumer; answer requests addressed to it.
func AgentPermissions(pc string) *server.Permissions {
	replay := core.ReplayConsumerName(pc)
	execReplay := core.StreamExec + "." + replay
	pub := []string{
		core.SubjectHeartbeat(pc),
		core.SubjectResults(">"),
		core.SubjectEventsStarted("*", pc),
		core.SubjectInventory(pc, ">"),
		kvSubject(core.BucketAgentsState) + pc,
		// Replay consumer on EXEC: create/update it (the filter list has
		// several subjects, so nats.go uses the subject without a filter
		// token), delete it when the broker refuses an in-place update,
		// pull and ack.
		jsAPI + "STREAM.INFO." + core.StreamExec,
		jsAPI + "CONSUMER.CREATE." + execReplay,
		jsAPI + "CONSUMER.CREATE." + execReplay + ".>",
		jsAPI + "CONSUMER.DELETE." + execReplay,
		jsAPI + "CONSUMER.INFO." + execReplay,
		jsAPI + "CONSUMER.MSG.NEXT." + execReplay,
		"$JS.ACK." + execReplay + ".>",
		// KV watches (ordered consumers) of the buckets the agent mirrors.
		kvWatch(core.BucketAgentConfig, ">"),
		kvWatch(core.BucketAgentGroups, pc),
		kvWatch(core.BucketScriptCurrent, ">"),
		kvWatch(core.BucketScriptStatus, ">"),
		// Its own agents_state row.
		jsAPI + "STREAM.INFO." + kvStream(core.BucketAgentsState),
		// Self-update reads agent_releases; big outputs go to result_output.
		jsAPI + "STREAM.INFO." + objStream(core.ObjectAgentReleases),
		jsAPI + "DIRECT.GET." + objStream(core.ObjectAgentReleases) + "." + objSubject(core.ObjectAgentReleases) + "M.*",
		jsAPI + "CONSUMER.CREATE." + objStream(core.ObjectAgentReleases) + ".*." + objSubject(core.ObjectAgentReleases) + "C.*",
		jsAPI + "STREAM.INFO." + objStream(core.ObjectResultOutput),
		jsAPI + "DIRECT.GET." + objStream(core.ObjectResultOutput) + "." + objSubject(core.ObjectResultOutput) + "M.*",
		objSubject(core.ObjectResultOutput) + "C.*",
		objSubject(core.ObjectResultOutput) + "M.*",
	}
	for _, b := range []string{core.BucketAgentConfig, core.BucketScriptCurrent, core.BucketScriptStatus} {
		pub = append(pub, kvRead(b, ">")...)
	}
	pub = append(pub, kvRead(core.BucketAgentGroups, pc)...)
	sub := []string{
		core.SubjectCommandsAll,
		core.SubjectCommandsPC(pc),
		core.SubjectCommandsGroup(">"),
		core.SubjectKill(">"),
		core.SubjectPing(pc),
		core.SubjectLogsFetch(pc),
		"_INBOX.>",
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
		// Replies to ping and logs.fetch, and JetStream flow control, go to
		// the reply subject of the message received: allow exactly those
		// instead of every _INBOX.
		Response: &server.ResponsePermission{MaxMsgs: 1, Expires: allowResponsesTTL},
	}
}

// OperatorPermissions are the operator role's: every verb, including
// `jetstream setup` (the whole JetStream API). It cannot pretend to be an
// agent: no heartbeats, results, events or inventory.
func OperatorPermissions() *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			core.SubjectCommandsWildcard,
			core.SubjectKill(">"),
			"audit.>",
			core.SubjectPing("*"),
			core.SubjectLogsFetch("*"),
			"$JS.API.>",
			"$JS.ACK.>",
			"$JS.FC.>",
			"$KV.>",
			"$O.>",
			"_INBOX.>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			core.SubjectHeartbeatWildcard,
			core.SubjectResults(">"),
			"events.>",
			"inventory.>",
			"audit.>",
			"_INBOX.>",
		}},
	}
}

// ReadonlyPermissions are the read-only role's: `kanade status` and
// `kanade jetstream status` (resource info, KV reads, heartbeats, pings),
// nothing that changes a resource or reaches an agent's work.
func ReadonlyPermissions() *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			jsAPI + "INFO",
			jsAPI + "STREAM.INFO.*",
			jsAPI + "STREAM.NAMES",
			jsAPI + "STREAM.LIST",
			jsAPI + "DIRECT.GET.KV_*.>",
			jsAPI + "CONSUMER.CREATE.KV_*.*.>",
			core.SubjectPing("*"),
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			core.SubjectHeartbeatWildcard,
			"_INBOX.>",
		}},
		Response: &server.ResponsePermission{MaxMsgs: 1, Expires: allowResponsesTTL},
	}
}
