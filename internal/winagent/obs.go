package winagent

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent/outbox"
)

// Observability events (SPEC-2 §1): agent_online once per start and
// agent_update when a self-update is installed, published on obs.<pc>
// through their own durable outbox (obs-outbox/, the generic queue the
// results and events use), so one emitted while the broker is away is
// delivered when it is back, and one emitted just before a restart by the
// next boot.
type obsEmitter struct {
	pc  string
	box *outbox.Outbox
	log *slog.Logger
}

// online queues agent_online for this start of version.
func (o obsEmitter) online(version string) {
	id := core.ObsStartupRecordPrefix + uuid.NewString()
	o.put(core.ObsKindAgentOnline, core.ObsSourceStartup, &id, map[string]string{"agent_version": version})
}

// updated queues agent_update for a self-update from → to.
func (o obsEmitter) updated(from, to string) {
	o.put(core.ObsKindAgentUpdate, core.ObsSourceSelfUpdate, nil, map[string]string{"from": from, "to": to})
}

// signatureState queues a change of the command-signature outcome class
// (keyring.go), upstream's command_signature_* events: which pcs verify,
// which still see unsigned commands, which miss a key.
func (o obsEmitter) signatureState(kind string, from, to outcome) {
	var fromKind *string
	if from != "" {
		k := signatureObsKindPrefix + string(from)
		fromKind = &k
	}
	id := fmt.Sprintf("%s:%d", kind, time.Now().UnixMilli())
	o.put(kind, signatureObsSource, &id, map[string]*string{"from": fromKind, "to": &kind})
}

func (o obsEmitter) put(kind, source string, recordID *string, payload any) {
	p, err := json.Marshal(payload)
	if err != nil {
		o.log.Error("encode obs event payload", "kind", kind, "error", err)
		return
	}
	ev := core.ObsEvent{PCID: o.pc, At: core.Now(), Kind: kind, Source: source, EventRecordID: recordID, Payload: p}
	data, err := json.Marshal(ev)
	if err == nil {
		// The message id makes a re-send after a crash a duplicate the
		// stream drops.
		msgID := "obs-" + uuid.NewString()
		if recordID != nil {
			msgID = *recordID
		}
		err = o.box.Put(outbox.Entry{Subject: core.SubjectObs(o.pc), Data: data, MsgID: msgID})
	}
	if err != nil {
		o.log.Error("could not queue obs event", "kind", kind, "error", err)
	}
}
