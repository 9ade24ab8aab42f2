package winagent

import (
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/signing"
	"github.com/kanadehq/kanade-go/internal/winagent/ledger"
)

// Command admission (SPEC §6.3, SPEC-2 §2). Commands arrive on three core
// subscriptions (commands.all, commands.pc.<pc>, commands.group.<g> per
// group: intake.go) and on the durable replay consumer on EXEC, which catches
// what was published while the agent was away (replay.go). Both paths feed
// the executor's acceptCommand; the admission ledger makes sure a request
// runs once.

// acceptCommand decodes one command payload and starts it unless the
// ledger has seen it. It never blocks on a running script: each admitted
// command gets its own goroutine. handled reports whether the message is
// dealt with (admitted, a duplicate or conflict, undecodable or refused);
// false means the agent is shutting down and did not take it, so the replay
// path leaves it unacked for the durable consumer to hand over at the next
// boot. durable is closed once the ledger record is on stable storage: the
// replay path acks only then.
//
// Signatures are checked first (keyring.go), before the ledger: a refused
// command does not consume its request id. A verified v2 envelope is
// admitted as the command inside it; a refused envelope is dropped without
// an answer; a legacy command refused by an enforcing agent is answered
// with exit 123.
func (x *executor) acceptCommand(via, subject string, hdr nats.Header, data []byte) (handled bool, durable <-chan struct{}) {
	raw := data
	envelope := x.verifier != nil && signing.IsEnvelope(data)
	if envelope {
		v := x.verifier.check(via, subject, hdr, data, "")
		if v.drop {
			return true, closedChan
		}
		data = v.data
	}
	cmd, err := core.DecodeCommand(data)
	if err != nil {
		x.log.Warn("ignoring command that does not decode", "subsystem", "intake", "via", via, "subject", subject, "bytes", len(data), "error", err)
		return true, closedChan
	}
	// The very bytes the ledger admitted before (they passed the check then) are a
	// redelivery: the ledger below answers it as a duplicate. Judging it
	// again could refuse a request that ran (its key retired since, a
	// break-glass signature aged out) and answer it a second time.
	if x.verifier != nil && !envelope && core.ValidToken(cmd.RequestID) && !x.admittedBefore(cmd.RequestID, data) {
		if v := x.verifier.check(via, subject, hdr, data, cmd.RequestID); v.refuse != "" {
			return x.refuseUnverified(cmd, v.refuse, hdr, raw)
		}
	}
	// An id that cannot be a subject token would be published on a subject
	// the broker refuses (results.<request_id>, kill.<exec_id>), or
	// subscribe to a wildcard: refuse it here, before anything is queued.
	if field, value, ok := invalidCommandID(cmd); ok {
		x.log.Warn("command refused: "+field+" is not a valid subject token", "subsystem", "intake", "via", via,
			"subject", subject, "field", field, "value", value)
		if field == "request_id" {
			return true, closedChan // nowhere to answer
		}
		// The request itself is addressable: answer it, once.
		x.mu.Lock()
		defer x.mu.Unlock()
		if x.closing || x.runCtx.Err() != nil {
			return false, closedChan
		}
		rec, verdict, durable, err := x.ledger.Admit(cmd.RequestID, data)
		x.logLedgerErr(cmd.RequestID, err)
		if verdict == ledger.Admitted {
			now := core.Now() // wire timestamps
			x.finishResult(x.log.With("subsystem", "intake", "request_id", cmd.RequestID), core.ExecResult{
				ResultID: rec.ResultID, RequestID: cmd.RequestID, PCID: x.pc, ExitCode: core.ExitKilled,
				Stderr:    fmt.Sprintf("refused: %s %q is not a valid subject token (no '.', '*', '>' or whitespace)", field, value),
				StartedAt: now, FinishedAt: now, ManifestID: cmd.ID,
			})
		}
		return true, durable
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closing || x.runCtx.Err() != nil {
		return false, closedChan
	}
	rec, verdict, durable, err := x.ledger.Admit(cmd.RequestID, data)
	x.logLedgerErr(cmd.RequestID, err)
	switch verdict {
	case ledger.Duplicate:
		x.log.Debug("duplicate command ignored", "subsystem", "intake", "via", via, "request_id", cmd.RequestID)
		return true, durable
	case ledger.Conflict:
		x.log.Warn("command ignored: its request_id was taken before by a command with other content", "subsystem", "intake",
			"via", via, "subject", subject, "request_id", cmd.RequestID, "first_accepted_at", rec.AcceptedAt)
		return true, durable
	}
	x.log.Info("command accepted", "subsystem", "intake", "via", via, "subject", subject,
		"request_id", cmd.RequestID, "id", cmd.ID, "version", cmd.Version, "exec_id", cmd.ExecIDValue(), "shell", cmd.Shell)
	x.launch(cmd, rec.ResultID)
	return true, durable
}

// refuseUnverified answers a command the agent refuses for its signature:
// exit 123, stderr "refused: <reason>", the deterministic result_id of
// signing.RefusalResultID, and nothing in the ledger. One command seen on
// both intake paths is answered once per process.
func (x *executor) refuseUnverified(cmd *core.Command, reason string, hdr nats.Header, raw []byte) (bool, <-chan struct{}) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closing || x.runCtx.Err() != nil {
		return false, closedChan
	}
	if !x.verifier.firstRefusal(cmd.RequestID, hdr, raw) {
		return true, closedChan
	}
	now := core.Now() // wire timestamps
	r := core.ExecResult{
		ResultID: signing.RefusalResultID(cmd.RequestID, x.pc), RequestID: cmd.RequestID, ExecID: cmd.ExecIDValue(), PCID: x.pc,
		ExitCode: core.ExitSignatureDenied, Stderr: "refused: " + reason, StartedAt: now, FinishedAt: now, ManifestID: cmd.ID,
	}
	if err := x.queueResult(r); err != nil {
		x.log.Error("could not queue the signature refusal; the command is refused again when it is delivered again", "subsystem", "intake",
			"request_id", cmd.RequestID, "error", err)
	}
	return true, closedChan
}

// admittedBefore reports whether the ledger holds requestID admitted with
// exactly these bytes (or with bytes it no longer knows, when every command
// with the id is a duplicate): nothing with them can run again.
func (x *executor) admittedBefore(requestID string, data []byte) bool {
	rec, ok := x.ledger.Lookup(requestID)
	return ok && (rec.Fingerprint == "" || rec.Fingerprint == ledger.Fingerprint(data))
}

// invalidCommandID names the first id of cmd that cannot be used where the
// agent puts it: request_id and exec_id become subject tokens, id a KV key.
func invalidCommandID(cmd *core.Command) (field, value string, bad bool) {
	if !core.ValidToken(cmd.RequestID) {
		return "request_id", cmd.RequestID, true
	}
	if cmd.ExecID != nil && !core.ValidToken(*cmd.ExecID) {
		return "exec_id", *cmd.ExecID, true
	}
	if cmd.ID != "" && !core.ValidKVKey(cmd.ID) {
		return "id", cmd.ID, true
	}
	return "", "", false
}

func (x *executor) logLedgerErr(requestID string, err error) {
	if err != nil {
		// The record is kept in memory, so this process never runs the
		// request twice; a restart might.
		x.log.Error("could not write the admission ledger; a restart could run this request again", "subsystem", "intake",
			"request_id", requestID, "error", err)
	}
}

// closedChan is an already closed channel: nothing to wait for.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
