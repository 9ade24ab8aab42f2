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

// orderedConsumer is the create subject of an ordered consumer (what
// nats.go's KV Watch and object Get use) on stream filtered to filter. Its
// name is random, so it is '*'; the filter is part of the subject, and the
// server refuses a request whose own filter differs, so the filter token
// scopes what the consumer can read.
func orderedConsumer(stream, filter string) string {
	return jsAPI + "CONSUMER.CREATE." + stream + ".*." + filter
}

// kvWatch lets a client watch key of bucket (">" for every key): open the
// bucket (STREAM.INFO), get keys directly (DIRECT.GET by subject, nats.go's
// KeyValue Get), create the watch's ordered consumer and delete it again
// when the watch stops.
func kvWatch(bucket, key string) []string {
	return []string{
		jsAPI + "STREAM.INFO." + kvStream(bucket),
		jsAPI + "DIRECT.GET." + kvStream(bucket) + "." + kvSubject(bucket) + key,
		orderedConsumer(kvStream(bucket), kvSubject(bucket)+key),
		jsAPI + "CONSUMER.DELETE." + kvStream(bucket) + ".*",
	}
}

// AgentPermissions are the permissions of pc's agent (user agent-<pc>):
// publish its own heartbeat, results, started events, inventory and
// agents_state row; read (never write) the fleet configuration, its own
// group membership and the script gates; consume only its own replay
// consumer; fetch agent releases; store large outputs; answer requests
// addressed to it. Every subject was taken from a protocol trace of a real
// agent (internal/securitytest) and the nats.go calls it makes.
func AgentPermissions(pc string) *server.Permissions {
	execReplay := core.StreamExec + "." + core.ReplayConsumerName(pc)
	releases, output := core.ObjectAgentReleases, core.ObjectResultOutput
	pub := []string{
		core.SubjectHeartbeat(pc),
		core.SubjectResults(">"),
		core.SubjectEventsStarted("*", pc),
		core.SubjectInventory(pc, core.SubjectInventoryHWSuffix),
		core.SubjectInventory(pc, core.SubjectInventorySWSuffix),
		core.SubjectInventory(pc, core.SubjectInventoryNetSuffix),
		// Its observability events (agent_online, agent_update).
		core.SubjectObs(pc),
		// Its own agents_state row, put by a publish on the key.
		kvSubject(core.BucketAgentsState) + pc,
		// The durable replay consumer on EXEC. Its filter list always has
		// two or more subjects, so nats.go creates it on the subject
		// without a filter token. DELETE is the fallback when a broker
		// refuses to change the filters in place.
		jsAPI + "CONSUMER.CREATE." + execReplay,
		jsAPI + "CONSUMER.DELETE." + execReplay,
		jsAPI + "CONSUMER.MSG.NEXT." + execReplay,
		"$JS.ACK." + execReplay + ".>",
		// Self-update: read releases (object info, then the chunks through
		// an ordered consumer).
		jsAPI + "STREAM.INFO." + objStream(releases),
		jsAPI + "DIRECT.GET." + objStream(releases) + "." + objSubject(releases) + "M.*",
		orderedConsumer(objStream(releases), objSubject(releases)+"C.*"),
		jsAPI + "CONSUMER.DELETE." + objStream(releases) + ".*",
		// Catalog scripts (script_object): read like releases.
		jsAPI + "STREAM.INFO." + objStream(core.ObjectScripts),
		jsAPI + "DIRECT.GET." + objStream(core.ObjectScripts) + "." + objSubject(core.ObjectScripts) + "M.*",
		orderedConsumer(objStream(core.ObjectScripts), objSubject(core.ObjectScripts)+"C.*"),
		jsAPI + "CONSUMER.DELETE." + objStream(core.ObjectScripts) + ".*",
		// Outputs over 256 KiB: look the name up, then chunks and meta.
		jsAPI + "STREAM.INFO." + objStream(output),
		jsAPI + "DIRECT.GET." + objStream(output) + "." + objSubject(output) + "M.*",
		objSubject(output) + "C.*",
		objSubject(output) + "M.*",
	}
	sub := []string{
		core.SubjectCommandsAll,
		core.SubjectCommandsPC(pc),
		// Membership is live KV data, so a group's subject cannot be
		// named here: any group's commands can be received.
		core.SubjectCommandsGroup(">"),
		core.SubjectKill(">"),
		core.SubjectPing(pc),
		core.SubjectLogsFetch(pc),
		// Replies to its JetStream requests, publish acks and object
		// reads come to its own inboxes (the agent connects with the
		// inbox prefix _INBOX.agent_<pc>), so it cannot read other
		// agents' or the operator's replies.
		core.AgentInboxSubjects(pc),
		// EXEC created anew (setup after a store loss) re-opens its
		// replay consumer (internal/winagent/replay.go).
		core.SubjectStreamCreatedAdvisory(core.StreamExec),
	}
	// The KV keys it follows (internal/winagent/kvfollow.go): the
	// agent_config scopes that can apply to it (global, any group's, its
	// own), its own agent_groups row and both gate buckets. It reads them
	// by direct get and follows them by a plain subscription on the keys'
	// subjects, so it needs no consumer and no STREAM.INFO.
	for _, f := range agentKVFollows(pc) {
		for _, key := range f.keys {
			pub = append(pub, jsAPI+"DIRECT.GET."+kvStream(f.bucket)+"."+core.SubjectKVKey(f.bucket, key))
			sub = append(sub, core.SubjectKVKey(f.bucket, key))
		}
		// The message-get API names the key in its body, so it can only be
		// allowed where every key is readable anyway; it serves buckets
		// made without allow_direct and tells a missing bucket apart.
		if f.wholeBucket {
			pub = append(pub, core.SubjectStreamMsgGet(kvStream(f.bucket)))
		}
		// A whole bucket is listed in one batch direct get (the body names
		// the subjects, so only where every key is readable anyway); a
		// broker that cannot batch is read through a short-lived watch.
		if f.wholeBucket && f.bucket == core.BucketSchedules {
			pub = append(pub, core.SubjectDirectGet(kvStream(f.bucket)),
				jsAPI+"STREAM.INFO."+kvStream(f.bucket),
				orderedConsumer(kvStream(f.bucket), kvSubject(f.bucket)+">"))
		}
		// A bucket created or deleted under a running agent (`jetstream
		// setup`, `reset`): the broker's advisories say so at once.
		sub = append(sub,
			core.SubjectStreamCreatedAdvisory(kvStream(f.bucket)),
			core.SubjectStreamDeletedAdvisory(kvStream(f.bucket)))
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
		// Replies to ping and logs.fetch (and JetStream flow control) go
		// to the reply subject of a message it received: allow exactly
		// those, once each, instead of publishing to every _INBOX.
		Response: &server.ResponsePermission{MaxMsgs: 1, Expires: allowResponsesTTL},
	}
}

// OperatorPermissions are the operator role's: every verb, `jetstream
// setup` and the rest of the JetStream API included. It cannot pose as an
// agent: no heartbeats, results, started events or inventory.
func OperatorPermissions() *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			core.SubjectCommandsWildcard,
			core.SubjectKill(">"),
			core.SubjectAuditWildcard,
			core.SubjectPing("*"),
			core.SubjectLogsFetch("*"),
			"$JS.API.>",
			"$JS.ACK.>",
			"$JS.FC.>",
			"$KV.>",
			"$O.>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			core.SubjectHeartbeatWildcard,
			core.SubjectResults(">"),
			core.SubjectEventsWildcard,
			core.SubjectInventoryWildcard,
			core.SubjectAuditWildcard,
			"_INBOX.>",
		}},
	}
}

// ReadonlyPermissions are the read-only role's: `kanade status` (with
// --ping), `kanade jetstream status` and the KV reads of `config get`,
// `group list` and the like; nothing that writes a resource, a key or a
// command.
func ReadonlyPermissions() *server.Permissions {
	pub := []string{
		jsAPI + "INFO",
		jsAPI + "STREAM.INFO.*",
		jsAPI + "STREAM.NAMES",
		jsAPI + "STREAM.LIST",
		core.SubjectPing("*"),
	}
	// A wildcard covers whole tokens only (KV_* would be literal), so
	// every bucket is named.
	for _, b := range kvBuckets() {
		pub = append(pub, kvWatch(b, ">")[1:]...)
	}
	// `exec status|list` and `schedule status|coverage` read the exec
	// records, started events and results through short-lived ordered
	// consumers: reading, never writing.
	for _, stream := range []string{core.StreamAudit, core.StreamEvents, core.StreamResults} {
		pub = append(pub,
			jsAPI+"CONSUMER.CREATE."+stream+".>",
			jsAPI+"CONSUMER.MSG.NEXT."+stream+".*",
			jsAPI+"CONSUMER.INFO."+stream+".*",
			jsAPI+"CONSUMER.DELETE."+stream+".*")
	}
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: []string{
			core.SubjectHeartbeatWildcard,
			"_INBOX.>",
		}},
		// JetStream flow control of its watches.
		Response: &server.ResponsePermission{MaxMsgs: 1, Expires: allowResponsesTTL},
	}
}

// kvBuckets are the names of every KV bucket kanade sets up.
func kvBuckets() []string {
	var out []string
	for _, r := range core.Resources(core.SetupOptions{}) {
		if r.Kind == core.KindKV {
			out = append(out, r.Name)
		}
	}
	return out
}

// kvFollowGrant is what one followed bucket grants an agent: the keys (or
// key patterns) it may read and subscribe to, and whether that is every key.
type kvFollowGrant struct {
	bucket      string
	keys        []string
	wholeBucket bool
}

// agentKVFollows are the KV keys pc's agent follows.
func agentKVFollows(pc string) []kvFollowGrant {
	return []kvFollowGrant{
		{bucket: core.BucketAgentConfig, keys: []string{core.ConfigKeyGlobal, core.ConfigKeyPC(pc), core.ConfigKeyGroup("*")}},
		{bucket: core.BucketAgentGroups, keys: []string{pc}},
		{bucket: core.BucketAgentGroupsDerived, keys: []string{pc}},
		{bucket: core.BucketScriptCurrent, keys: []string{">"}, wholeBucket: true},
		{bucket: core.BucketScriptStatus, keys: []string{">"}, wholeBucket: true},
		// The local scheduler (internal/winagent/local_scheduler.go):
		// every schedule (fleet-wide data; a batch direct get lists them),
		// the jobs its schedules name, and the fleet freeze only — never
		// the scheduler's lease and state rows of fleet_config.
		{bucket: core.BucketSchedules, keys: []string{">"}, wholeBucket: true},
		{bucket: core.BucketJobs, keys: []string{">"}, wholeBucket: true},
		{bucket: core.BucketFleetConfig, keys: []string{core.KeyFreeze}},
	}
}
