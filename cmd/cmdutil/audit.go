package cmdutil

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
)

// AuditTimeout bounds the wait for the AUDIT stream's ack: the real work is
// already done, so a slow or missing stream must not hold the verb up.
const AuditTimeout = 2 * time.Second

// EnvActor names the operator in audit events when set (CI, shared terminals).
const EnvActor = "KANADE_ACTOR"

// AuditActor is who drives this CLI: $KANADE_ACTOR, else the OS user name,
// else "unknown".
func AuditActor() string {
	if a := strings.TrimSpace(os.Getenv(EnvActor)); a != "" {
		return a
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	for _, env := range []string{"USER", "USERNAME"} {
		if v := os.Getenv(env); v != "" {
			return v
		}
	}
	return "unknown"
}

// AuditSubjectTarget turns target into subject tokens: dots keep separating
// tokens (a config scope "groups.canary" stays two tokens), and a token that
// could not stand in a subject (wildcards, spaces) is sanitised.
func AuditSubjectTarget(target string) string {
	var parts []string
	for _, p := range strings.Split(target, ".") {
		if p == "" {
			continue
		}
		if !core.ValidToken(p) {
			p = core.SanitizeToken(p)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ".")
}

// NewAuditEvent builds the event for action on target. actor is the human
// identity ($KANADE_ACTOR, else the OS user); the same identity also rides in
// payload.sub with payload.source "cli", which is where upstream's backend
// audit projector looks, so it reads Go and Rust CLIs alike.
func NewAuditEvent(now time.Time, action, target string, payload map[string]any) core.AuditEvent {
	p := make(map[string]any, len(payload)+2)
	for k, v := range payload {
		p[k] = v
	}
	actor := AuditActor()
	if _, ok := p["sub"]; !ok {
		p["sub"] = actor
	}
	if _, ok := p["source"]; !ok {
		p["source"] = "cli"
	}
	raw, err := json.Marshal(p)
	if err != nil {
		raw = nil
	}
	var t *string
	if target != "" {
		t = &target
	}
	return core.AuditEvent{
		Actor:      actor,
		Action:     action,
		Target:     t,
		Payload:    raw,
		OccurredAt: now.UTC(),
	}
}

// PublishAudit records a mutating verb on audit.operator.<action>[.<target>]
// with a JetStream publish, best effort: a failure is a warning on errOut and
// never fails the verb.
func PublishAudit(ctx context.Context, js jetstream.JetStream, errOut io.Writer, now time.Time, action, target string, payload map[string]any) {
	ev := NewAuditEvent(now, action, target, payload)
	subject := core.SubjectAudit(action, AuditSubjectTarget(target))
	body, err := json.Marshal(ev)
	if err != nil {
		fmt.Fprintf(errOut, "warning: audit event not recorded: encode: %v\n", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), AuditTimeout)
	defer cancel()
	if _, err := js.Publish(ctx, subject, body); err != nil {
		fmt.Fprintf(errOut, "warning: audit event not recorded on %s: %v\n", subject, err)
	}
}
