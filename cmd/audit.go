package cmd

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

// auditTimeout bounds the wait for the AUDIT stream's ack: the real work is
// already done, so a slow or missing stream must not hold the verb up.
const auditTimeout = 2 * time.Second

// envActor names the operator in audit events when set (CI, shared terminals).
const envActor = "KANADE_ACTOR"

// auditActor is who drives this CLI: $KANADE_ACTOR, else the OS user name,
// else "unknown".
func auditActor() string {
	if a := strings.TrimSpace(os.Getenv(envActor)); a != "" {
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

// auditSubjectTarget turns target into subject tokens: dots keep separating
// tokens (a config scope "groups.canary" stays two tokens), and a token that
// could not stand in a subject (wildcards, spaces) is sanitised.
func auditSubjectTarget(target string) string {
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

// newAuditEvent builds the event for action on target. actor is the human
// identity ($KANADE_ACTOR, else the OS user); the same identity also rides in
// payload.sub with payload.source "cli", which is where upstream's backend
// audit projector looks, so it reads Go and Rust CLIs alike.
func newAuditEvent(now time.Time, action, target string, payload map[string]any) core.AuditEvent {
	p := make(map[string]any, len(payload)+2)
	for k, v := range payload {
		p[k] = v
	}
	actor := auditActor()
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

// publishAudit records a mutating verb on audit.operator.<action>[.<target>]
// with a JetStream publish, best effort: a failure is a warning on errOut and
// never fails the verb.
func publishAudit(ctx context.Context, js jetstream.JetStream, errOut io.Writer, now time.Time, action, target string, payload map[string]any) {
	ev := newAuditEvent(now, action, target, payload)
	subject := core.SubjectAudit(action, auditSubjectTarget(target))
	body, err := json.Marshal(ev)
	if err != nil {
		fmt.Fprintf(errOut, "warning: audit event not recorded: encode: %v\n", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if _, err := js.Publish(ctx, subject, body); err != nil {
		fmt.Fprintf(errOut, "warning: audit event not recorded on %s: %v\n", subject, err)
	}
}
