package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/schedule"
)

// ShowOptions are the inputs of `kanade schedule show`.
type ShowOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time
	Local     *time.Location

	ID   string
	JSON bool
}

// NewShowCmd is `kanade schedule show ID`.
func NewShowCmd(f *cmdutil.Factory, runF func(context.Context, *ShowOptions) error) *cobra.Command {
	opts := &ShowOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now, Local: time.Local}
	c := &cobra.Command{
		Use:   "show ID",
		Short: "Show one schedule as stored",
		Long: `Print a schedule's YAML as it was written (KV schedules_yaml; rendered from the
stored JSON when there is none) on stdout, with its next fire on stderr.
--json prints {"schedule": <stored JSON>, "revision", "next_fire",
"next_note"}.`,
		Example:           `  kanade schedule show nightly-cleanup`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: CompleteScheduleIDs(f),
		RunE: func(c *cobra.Command, args []string) error {
			opts.ID = args[0]
			if err := checkID(opts.ID); err != nil {
				return err
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runShow(c.Context(), opts)
		},
	}
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	return c
}

func runShow(ctx context.Context, opts *ShowOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	s, err := getSchedule(ctx, js, opts.ID)
	if err != nil {
		return err
	}
	e := entryOf(s, opts.Now(), opts.Local)
	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, e)
	}
	b, err := scheduleYAML(ctx, js, s.Schedule)
	if err != nil {
		return err
	}
	if _, err := opts.IO.Out.Write(b); err != nil {
		return err
	}
	if e.NextFire != nil {
		fmt.Fprintf(opts.IO.ErrOut, "next fire: %s (%s)\n", e.NextFire.In(s.Schedule.Location(opts.Local)).Format("2006-01-02 15:04 MST"), formatNext(&cmdutil.IOStreams{OutTTY: true}, *e.NextFire, opts.Now()))
	} else {
		fmt.Fprintf(opts.IO.ErrOut, "next fire: %s\n", e.NextNote)
	}
	return nil
}

// scheduleYAML is the YAML kept in schedules_yaml for s, or one rendered
// from its JSON (keys in JSON order) when there is none.
func scheduleYAML(ctx context.Context, js jetstream.JetStream, s *schedule.Schedule) ([]byte, error) {
	if kv, err := js.KeyValue(ctx, core.BucketSchedulesYAML); err == nil {
		e, err := kv.Get(ctx, s.ID)
		switch {
		case err == nil && len(e.Value()) > 0:
			return e.Value(), nil
		case err != nil && !errors.Is(err, jetstream.ErrKeyNotFound):
			return nil, fmt.Errorf("read %s/%s: %w", core.BucketSchedulesYAML, s.ID, err)
		}
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	var n yaml.Node
	if err := yaml.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("render schedule %s as YAML: %w", s.ID, err)
	}
	setBlockStyle(&n)
	return yaml.Marshal(&n)
}

// setBlockStyle turns JSON's flow style and quoting into YAML's block
// style with plain scalars (the encoder still quotes a string that would
// otherwise read as another type).
func setBlockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		setBlockStyle(c)
	}
}
