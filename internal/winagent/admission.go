package winagent

import (
	"fmt"
	"log/slog"

	"github.com/google/uuid"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent/ledger"
	"github.com/kanadehq/kanade-go/internal/winagent/outbox"
)

// What a boot does with the admission ledger's unfinished records (SPEC-2
// §2): a launching record was being spawned or running when the agent
// stopped without answering it, so it is answered with exit 121 (never run
// again: the script may have had its effects); a pending record never
// started, so it is re-gated and run.

// interruptedReason is the stderr of a result for a run the agent lost.
const interruptedReason = "agent restarted during execution; outcome unknown"

// answerInterrupted queues in results the 121 result of every launching
// record of led and marks it finished. A result the outbox refused leaves
// the record for the next boot. New calls it, before anything can admit a
// command.
func answerInterrupted(led *ledger.Ledger, results *outbox.Outbox, pc string, log *slog.Logger) {
	for _, rec := range led.Unfinished() {
		if rec.State != ledger.Launching {
			continue
		}
		cmd := decodeRecorded(rec)
		started := rec.AcceptedAt
		if rec.LaunchedAt != nil {
			started = *rec.LaunchedAt
		}
		r := core.ExecResult{
			ResultID: rec.ResultID, RequestID: rec.RequestID, ExecID: cmd.ExecIDValue(), PCID: pc,
			ExitCode:  core.ExitInterrupted,
			Stderr:    fmt.Sprintf("%s (started %s)", interruptedReason, started.UTC().Format("2006-01-02T15:04:05Z")),
			StartedAt: started.UTC(), FinishedAt: core.Now(), ManifestID: cmd.ID, // wire timestamps
		}
		if r.ResultID == "" {
			// Its admission line was lost (a power cut): the result_id is
			// gone with it.
			r.ResultID = newResultID()
		}
		if err := queueResult(results, r); err != nil {
			log.Error("could not answer a run interrupted by a restart; retried at the next boot", "subsystem", "ledger", "request_id", rec.RequestID, "error", err)
			continue
		}
		if err := led.Finish(rec.RequestID); err != nil {
			log.Warn("could not mark an interrupted run finished", "subsystem", "ledger", "request_id", rec.RequestID, "error", err)
		}
		log.Warn("answered a command interrupted by an agent restart; it was not re-run", "subsystem", "ledger",
			"request_id", rec.RequestID, "result_id", r.ResultID, "exit_code", r.ExitCode)
	}
}

// runPending launches every pending record, oldest first, as if it had
// just arrived; the gates judge it again.
func (x *executor) runPending() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, rec := range x.ledger.Unfinished() {
		if rec.State != ledger.Pending {
			continue
		}
		cmd, err := core.DecodeCommand(rec.Command)
		if err != nil || cmd.RequestID != rec.RequestID {
			x.log.Error("pending command in the admission ledger does not decode; it is dropped unanswered", "subsystem", "ledger", "request_id", rec.RequestID, "error", err)
			_ = x.ledger.Finish(rec.RequestID)
			continue
		}
		x.log.Info("running a command accepted before the restart", "subsystem", "ledger", "request_id", rec.RequestID, "accepted_at", rec.AcceptedAt)
		x.adoptLocal(rec)
		x.launch(cmd, rec.ResultID)
	}
}

// decodeRecorded is the recorded command, or one holding only the request
// id when its bytes are gone.
func decodeRecorded(rec ledger.Record) *core.Command {
	if cmd, err := core.DecodeCommand(rec.Command); err == nil && cmd != nil {
		return cmd
	}
	return &core.Command{RequestID: rec.RequestID}
}

func newResultID() string { return uuid.NewString() }
