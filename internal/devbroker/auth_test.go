package devbroker

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// shippedRoles is the role file operators deploy.
var shippedRoles = filepath.Join("..", "..", "docs", "roles", "kanade-roles.conf")

// TestRolesMatchShippedConf loads docs/roles/kanade-roles.conf the way
// nats-server does and compares every user's permissions with the Go roles
// `kanade devbroker --auth roles` runs with, so the two cannot drift.
func TestRolesMatchShippedConf(t *testing.T) {
	pw := map[string]string{
		"KANADE_OPERATOR_PASSWORD": "op-pw",
		"KANADE_READONLY_PASSWORD": "ro-pw",
		"KANADE_AGENT_PASSWORD":    "agent-pw",
	}
	for k, v := range pw {
		t.Setenv(k, v)
	}
	opts, err := server.ProcessConfigFile(shippedRoles)
	if err != nil {
		t.Fatalf("nats-server refuses %s: %v", shippedRoles, err)
	}
	want := map[string]struct {
		password string
		perms    *server.Permissions
	}{
		UserOperator:          {"op-pw", OperatorPermissions()},
		UserReadonly:          {"ro-pw", ReadonlyPermissions()},
		AgentUser("dev-pc-1"): {"agent-pw", AgentPermissions("dev-pc-1")},
	}
	if len(opts.Users) != len(want) {
		t.Fatalf("%s has %d users, want %d", shippedRoles, len(opts.Users), len(want))
	}
	for _, u := range opts.Users {
		w, ok := want[u.Username]
		if !ok {
			t.Errorf("unexpected user %q in %s", u.Username, shippedRoles)
			continue
		}
		if u.Password != w.password {
			t.Errorf("user %s: password %q, want the one from the environment", u.Username, u.Password)
		}
		comparePermissions(t, u.Username, u.Permissions, w.perms)
	}
}

func comparePermissions(t *testing.T, who string, got, want *server.Permissions) {
	t.Helper()
	cmp := func(what string, g, w *server.SubjectPermission) {
		t.Helper()
		for _, side := range []struct {
			name string
			g, w []string
		}{{"allow", subjects(g, true), subjects(w, true)}, {"deny", subjects(g, false), subjects(w, false)}} {
			if slices.Equal(side.g, side.w) {
				continue
			}
			for _, s := range side.w {
				if !slices.Contains(side.g, s) {
					t.Errorf("%s %s %s: %q is in Go, not in the .conf", who, what, side.name, s)
				}
			}
			for _, s := range side.g {
				if !slices.Contains(side.w, s) {
					t.Errorf("%s %s %s: %q is in the .conf, not in Go", who, what, side.name, s)
				}
			}
			if len(side.g) != len(side.w) {
				t.Errorf("%s %s %s: %d subjects in the .conf, %d in Go (duplicates?)", who, what, side.name, len(side.g), len(side.w))
			}
		}
	}
	cmp("publish", got.Publish, want.Publish)
	cmp("subscribe", got.Subscribe, want.Subscribe)
	switch {
	case (got.Response == nil) != (want.Response == nil):
		t.Errorf("%s allow_responses: .conf %+v, Go %+v", who, got.Response, want.Response)
	case got.Response != nil && *got.Response != *want.Response:
		t.Errorf("%s allow_responses: .conf %+v, Go %+v", who, *got.Response, *want.Response)
	}
}

func subjects(p *server.SubjectPermission, allow bool) []string {
	if p == nil {
		return nil
	}
	s := p.Deny
	if allow {
		s = p.Allow
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestParseAuthMode(t *testing.T) {
	for in, want := range map[string]AuthMode{"none": AuthNone, "token": AuthToken, "roles": AuthRoles, " Roles ": AuthRoles} {
		if got, err := ParseAuthMode(in); err != nil || got != want {
			t.Errorf("ParseAuthMode(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "jwt", "role"} {
		if _, err := ParseAuthMode(bad); err == nil || !strings.Contains(err.Error(), "want none, token or roles") {
			t.Errorf("ParseAuthMode(%q) error = %v", bad, err)
		}
	}
}

func TestNewRoles(t *testing.T) {
	r, err := NewRoles([]string{"pc-1", "mac.local"})
	if err != nil {
		t.Fatal(err)
	}
	users := r.Users()
	names := make([]string, len(users))
	seen := map[string]bool{}
	for i, u := range users {
		names[i] = u.Username
		if len(u.Password) < 32 || seen[u.Password] {
			t.Errorf("user %s: weak or repeated password %q", u.Username, u.Password)
		}
		seen[u.Password] = true
		if u.Permissions == nil || u.Permissions.Publish == nil || len(u.Permissions.Publish.Allow) == 0 {
			t.Errorf("user %s has no publish allow list: it would be allowed everything", u.Username)
		}
	}
	if want := []string{"operator", "readonly", "agent-pc-1", "agent-mac.local"}; !slices.Equal(names, want) {
		t.Fatalf("users = %v, want %v", names, want)
	}
	if c, ok := r.Agent("mac.local"); !ok || c.User != "agent-mac.local" || c.Password != users[3].Password {
		t.Fatalf("Agent(mac.local) = %+v, %v", c, ok)
	}
	if _, ok := r.Agent("pc-9"); ok {
		t.Fatal("Agent(pc-9) found a user that was never made")
	}
	again, _ := NewRoles([]string{"pc-1"})
	if again.Operator.Password == r.Operator.Password {
		t.Fatal("two starts share a password")
	}
	// A pc id that would widen a subject is refused outright.
	for _, bad := range []string{"*", "pc.>", "a b", "", ".pc", "pc.", "a..b"} {
		if _, err := NewRoles([]string{bad}); err == nil {
			t.Errorf("NewRoles(%q) accepted", bad)
		}
	}
}

// TestAgentPermissionsNameOnlyItsPC checks that every pc-specific subject of
// an agent names exactly its own pc: for pc "mac" nothing may also match a
// subject of pc "mac.local" (a '>' after the pc id would).
func TestAgentPermissionsNameOnlyItsPC(t *testing.T) {
	p := AgentPermissions("mac")
	for _, s := range append(slices.Clone(p.Publish.Allow), p.Subscribe.Allow...) {
		toks := strings.Split(s, ".")
		for i, tok := range toks[:len(toks)-1] {
			if tok == "mac" && (toks[i+1] == ">" || toks[i+1] == "*") {
				t.Errorf("%q reaches past pc mac", s)
			}
		}
	}
	other := AgentPermissions("other")
	for _, s := range p.Publish.Allow {
		if strings.Contains(s, "mac") && slices.Contains(other.Publish.Allow, s) {
			t.Errorf("%q is allowed to pc other as well", s)
		}
	}
}
