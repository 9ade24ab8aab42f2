// Package freeze is `kanade freeze`: the fleet-wide change freeze (SPEC-2
// §4), KV fleet_config key freeze. While it holds, no schedule fires, on
// the agents (which keep the freeze they last saw while offline) or in
// `kanade scheduler`; `kanade run` and `kanade exec` are never frozen.
package freeze

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/schedule"
)

// NewFreezeCmd is `kanade freeze`.
func NewFreezeCmd(f *cmdutil.Factory) *cobra.Command {
	c := &cobra.Command{
		Use:   "freeze",
		Short: "Stop every schedule fire across the fleet, or lift the freeze",
		Long: `A freeze stops every schedule fire, on the agents (runs_on: agent) and in
kanade scheduler (runs_on: backend), during an incident or a planned change
freeze. It never stops ` + "`kanade run`" + ` or ` + "`kanade exec`" + `.

It is one value in KV fleet_config under the key freeze:
  absent                          not frozen
  {}                              frozen until cleared
  {"from":…, "until":…, "tz":…}   frozen in [from, until)
  anything that does not decode   frozen (fail-safe)
Agents follow it live and keep the last value they saw while offline.`,
		Args: cobra.NoArgs,
	}
	c.AddCommand(NewStatusCmd(f, nil), NewSetCmd(f, nil), NewClearCmd(f, nil))
	return c
}

// Audit actions, upstream's names.
const (
	auditSet   = "freeze_set"
	auditClear = "freeze_clear"
)

// openKV opens fleet_config, naming the fix when it is missing.
func openKV(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, core.BucketFleetConfig)
	if err != nil {
		return nil, cmdutil.WithHint(fmt.Errorf("open kv %q: %w", core.BucketFleetConfig, err), "run `kanade jetstream setup` first")
	}
	return kv, nil
}

// State is the `freeze status --json` document.
type State struct {
	// Set: the key exists. Frozen: fires are stopped now.
	Set    bool `json:"set"`
	Frozen bool `json:"frozen"`
	// Why is the reason fires are stopped now (or "").
	Why string `json:"why,omitempty"`
	// Freeze is the decoded value, absent when unset or unreadable.
	Freeze *schedule.Freeze `json:"freeze,omitempty"`
	// Error says why the stored value does not decode (frozen).
	Error string `json:"error,omitempty"`
	// Raw is the stored value when it does not decode.
	Raw string `json:"raw,omitempty"`
	// SetAt is when the value was written.
	SetAt *time.Time `json:"set_at,omitempty"`
	// From and Until are the bounds as instants (RFC 3339), if any.
	From  *time.Time `json:"from,omitempty"`
	Until *time.Time `json:"until,omitempty"`
}

// readState reads the freeze key.
func readState(ctx context.Context, kv jetstream.KeyValue, now time.Time, local *time.Location) (*State, error) {
	e, err := kv.Get(ctx, core.KeyFreeze)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return &State{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", core.BucketFleetConfig, core.KeyFreeze, err)
	}
	fs := schedule.FreezeStateOf(true, e.Value())
	st := &State{Set: true}
	st.Frozen, st.Why = fs.Frozen(now, local)
	at := e.Created().UTC()
	st.SetAt = &at
	if fs.Err != nil {
		st.Error, st.Raw = fs.Err.Error(), string(e.Value())
		return st, nil
	}
	f := fs.Freeze
	st.Freeze = &f
	loc := f.Location(local)
	if f.From != "" {
		if t, err := schedule.ParseBound(f.From, loc); err == nil {
			t = t.UTC()
			st.From = &t
		}
	}
	if f.Until != "" {
		if t, err := schedule.ParseBound(f.Until, loc); err == nil {
			t = t.UTC()
			st.Until = &t
		}
	}
	return st, nil
}
