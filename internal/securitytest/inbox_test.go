package securitytest

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

// TestAgentInboxesArePrivate checks the per-agent inbox prefix under the
// agent role: pc-a's replies (here a JetStream direct get it is allowed to
// make) arrive on its own inbox, and pc-b's user can subscribe neither to
// pc-a's inboxes nor to every inbox; it receives nothing of pc-a's reply.
func TestAgentInboxesArePrivate(t *testing.T) {
	rb := startRolesBroker(t, "pc-a", "pc-b")
	credA, _ := rb.roles.Agent("pc-a")
	credB, _ := rb.roles.Agent("pc-b")
	a := connect(t, core.ConnectOptions{URL: rb.ClientURL(), User: credA.User, Password: credA.Password, InboxPrefix: core.AgentInboxPrefix("pc-a")})
	b := connect(t, core.ConnectOptions{URL: rb.ClientURL(), User: credB.User, Password: credB.Password, InboxPrefix: core.AgentInboxPrefix("pc-b")})
	errsB := &asyncErrs{}
	b.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errsB.add(err) })

	// pc-b tries to listen to pc-a's replies, and to everyone's.
	snooped := make(chan *nats.Msg, 16)
	for _, subj := range []string{core.AgentInboxSubjects("pc-a"), "_INBOX.>"} {
		if _, err := b.ChanSubscribe(subj, snooped); err != nil {
			t.Fatalf("subscribe %s: %v", subj, err)
		}
	}
	// Its own inbox is fine.
	own := make(chan *nats.Msg, 1)
	if _, err := b.ChanSubscribe(core.AgentInboxSubjects("pc-b"), own); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, "pc-b refused pc-a's inbox and _INBOX.>", func() bool {
		return errsB.refused(core.AgentInboxSubjects("pc-a")) && errsB.refused("_INBOX.>")
	})
	if errsB.refused(core.AgentInboxSubjects("pc-b")) {
		t.Fatal("pc-b was refused its own inbox")
	}

	// pc-a makes a request it is allowed to make (the self-update's look
	// at agent_releases; JetStream answers it, even with "not found"); the
	// answer comes to pc-a's inbox, and only there.
	reply, err := a.Request("$JS.API.STREAM.INFO.OBJ_"+core.ObjectAgentReleases, nil, 5*time.Second)
	if err != nil {
		t.Fatalf("pc-a's own request: %v", err)
	}
	if want := core.AgentInboxPrefix("pc-a") + "."; len(reply.Subject) <= len(want) || reply.Subject[:len(want)] != want {
		t.Fatalf("pc-a's reply came on %q, want under %s", reply.Subject, want)
	}
	// A round trip of pc-b's own after pc-a's reply: anything it could
	// have received is in by now.
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-snooped:
		t.Fatalf("pc-b received a reply meant for pc-a on %s", m.Subject)
	default:
	}
}
