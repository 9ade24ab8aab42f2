package cmd

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// JetstreamStatusOptions are `kanade jetstream status`'s dependencies and flags.
type JetstreamStatusOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	// Server is the broker URL (redacted) for the report.
	Server func() string

	Setup core.SetupOptions
	// AutoProfile is set when --profile was not given: compare with the
	// profile the broker matches best, as `kanade status` does.
	AutoProfile bool
	JSON        bool
}

// NewJetstreamStatusCmd is `kanade jetstream status`.
func NewJetstreamStatusCmd(f *cmdutil.Factory, runF func(context.Context, *JetstreamStatusOptions) error) *cobra.Command {
	opts := &JetstreamStatusOptions{
		IO:        f.IO,
		JetStream: func(ctx context.Context) (jetstream.JetStream, error) { return f.JetStream(ctx) },
		Server: func() string {
			c, err := f.Config()
			if err != nil {
				return ""
			}
			return core.RedactURL(c.Server)
		},
	}
	var profile string
	var replicas int
	c := &cobra.Command{
		Use:   "status",
		Short: "Show every JetStream resource and its drift from the expected config",
		Long: `Show every stream, KV bucket and object store kanade expects: whether it
exists, its messages, bytes and max_bytes, and any drift from the expected
config for --profile (default: the profile the broker matches best,
production or dev) and --replicas.

Exits 1 when anything is missing, drifted or unknown, so scripts can use it.
"?" means the broker did not say; "-" means the resource does not exist.`,
		Example: `  kanade jetstream status
  kanade jetstream status --profile dev --json | jq '.resources[] | select(.state != "ok")'`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			so, err := parseSetupFlags(profile, replicas)
			if err != nil {
				return err
			}
			opts.Setup = so
			opts.AutoProfile = !c.Flags().Changed("profile")
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runJetstreamStatus(c.Context(), opts)
		},
	}
	jetstreamProfileFlags(c.Flags(), &profile, &replicas)
	autoProfileFlag(c.Flags())
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	return c
}

// Resource states of `jetstream status`.
const (
	stateOK      = "ok"
	stateMissing = "missing"
	stateDrift   = "drift"
	stateUnknown = "unknown"
)

// statusJSON is `jetstream status --json`.
type statusJSON struct {
	Server    string `json:"server"`
	Reachable bool   `json:"reachable"`
	// Error says why the broker could not be reached.
	Error     string               `json:"error"`
	Profile   string               `json:"profile"`
	Replicas  int                  `json:"replicas"`
	OK        bool                 `json:"ok"`
	Resources []statusResourceJSON `json:"resources"`
}

// statusResourceJSON is one resource. The limits are the broker's own values
// (null when the resource is missing or its state unknown); Drift lists where
// they differ from the expected ones.
type statusResourceJSON struct {
	Kind              string     `json:"kind"`
	Name              string     `json:"name"`
	Stream            string     `json:"stream"`
	State             string     `json:"state"`
	Exists            *bool      `json:"exists"`
	Messages          *uint64    `json:"messages"`
	Bytes             *uint64    `json:"bytes"`
	MaxBytes          *int64     `json:"max_bytes"`
	MaxAge            *string    `json:"max_age"`
	MaxMsgsPerSubject *int64     `json:"max_msgs_per_subject"`
	Replicas          *int       `json:"replicas"`
	Subjects          []string   `json:"subjects"`
	Storage           string     `json:"storage"`
	Drift             []diffJSON `json:"drift"`
	Error             string     `json:"error"`
}

func statusOf(st core.ResourceState) string {
	switch {
	case st.Err != nil || st.Action == core.ActionUnknown:
		return stateUnknown
	case !st.Exists:
		return stateMissing
	case len(st.Diff) > 0:
		return stateDrift
	}
	return stateOK
}

func statusResource(st core.ResourceState) statusResourceJSON {
	r := statusResourceJSON{
		Kind: string(st.Kind), Name: st.Name, Stream: st.StreamName(),
		State: statusOf(st), Drift: diffsJSON(st.Diff), Error: jsErrString(st.Err),
		Subjects: []string{},
	}
	if r.State == stateUnknown {
		return r
	}
	exists := st.Exists
	r.Exists = &exists
	if !exists {
		return r
	}
	h := st.Have
	msgs, bytes, maxBytes, perSubject, replicas := st.Messages, st.Bytes, h.MaxBytes, h.MaxMsgsPerSubject, max(h.Replicas, 1)
	age := core.FormatDuration(h.MaxAge)
	r.Messages, r.Bytes, r.MaxBytes, r.MaxMsgsPerSubject, r.Replicas, r.MaxAge = &msgs, &bytes, &maxBytes, &perSubject, &replicas, &age
	r.Subjects = append(r.Subjects, h.Subjects...)
	r.Storage = h.Storage.String()
	return r
}

func runJetstreamStatus(ctx context.Context, opts *JetstreamStatusOptions) error {
	doc := statusJSON{
		Profile: string(opts.Setup.Profile), Replicas: max(opts.Setup.Replicas, 1),
		Resources: []statusResourceJSON{},
	}
	if opts.Server != nil {
		doc.Server = opts.Server()
	}
	js, err := opts.JetStream(ctx)
	if err != nil {
		// Unreachable is not "missing": every resource is unknown.
		doc.Error = err.Error()
		for _, r := range core.Resources(opts.Setup) {
			doc.Resources = append(doc.Resources, statusResource(core.ResourceState{Resource: r, Action: core.ActionUnknown, Err: err}))
		}
		if opts.JSON {
			if jerr := cmdutil.WriteJSON(opts.IO.Out, doc); jerr != nil {
				return jerr
			}
		}
		return err
	}
	doc.Reachable = true
	var plan []core.ResourceState
	if opts.AutoProfile {
		opts.Setup, plan = planCloserProfile(ctx, js, opts.Setup)
		doc.Profile = string(opts.Setup.Profile)
	} else {
		plan = core.Plan(ctx, js, opts.Setup)
	}
	counts := map[string]int{}
	for _, st := range plan {
		r := statusResource(st)
		counts[r.State]++
		doc.Resources = append(doc.Resources, r)
	}
	doc.OK = counts[stateOK] == len(plan)

	if opts.JSON {
		if err := cmdutil.WriteJSON(opts.IO.Out, doc); err != nil {
			return err
		}
	} else if err := printStatusTable(opts.IO, doc.Resources); err != nil {
		return err
	}

	if doc.OK {
		fmt.Fprintf(opts.IO.ErrOut, "all %d resources ok\n", len(plan))
		return nil
	}
	var parts []string
	for _, s := range []string{stateMissing, stateDrift, stateUnknown} {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	fmt.Fprintf(opts.IO.ErrOut, "%d of %d resources need attention: %s\n", len(plan)-counts[stateOK], len(plan), strings.Join(parts, ", "))
	if counts[stateMissing]+counts[stateDrift] > 0 {
		fmt.Fprintf(opts.IO.ErrOut, "hint: run `kanade jetstream setup%s` (preview with --dry-run)\n", setupFlagsHint(opts.Setup))
	}
	if counts[stateUnknown] > 0 {
		for _, st := range plan {
			if st.Err != nil {
				fmt.Fprintf(opts.IO.ErrOut, "error: %v\n", st.Err)
				break
			}
		}
	}
	// The table already says what is wrong; exit 1 without repeating it.
	return &cmdutil.ExitError{Code: cmdutil.ExitFailure}
}

func printStatusTable(io *cmdutil.IOStreams, rows []statusResourceJSON) error {
	st := io.OutStyles()
	header := []string{"KIND", "NAME", "STATE", "MESSAGES", "BYTES", "MAX_BYTES", "DRIFT"}
	out := make([][]string, 0, len(rows))
	for _, r := range rows {
		state := r.State
		if io.OutTTY {
			switch r.State {
			case stateOK:
				state = st.OK.Render(state)
			case stateMissing, stateUnknown:
				state = st.Err.Render(state)
			case stateDrift:
				state = st.Warn.Render(state)
			}
		}
		msgs, bytes, maxBytes := "-", "-", "-"
		switch {
		case r.State == stateUnknown:
			msgs, bytes, maxBytes = "?", "?", "?"
		case r.Exists != nil && *r.Exists:
			msgs = strconv.FormatUint(*r.Messages, 10)
			if io.OutTTY {
				bytes, maxBytes = jsHumanBytes(int64(*r.Bytes)), jsHumanBytes(*r.MaxBytes)
			} else {
				bytes, maxBytes = strconv.FormatUint(*r.Bytes, 10), strconv.FormatInt(*r.MaxBytes, 10)
			}
		}
		drift := "-"
		if len(r.Drift) > 0 {
			parts := make([]string, len(r.Drift))
			for i, d := range r.Drift {
				parts[i] = fmt.Sprintf("%s %s → %s", d.Field, d.Have, d.Want)
			}
			drift = strings.Join(parts, "; ")
		}
		out = append(out, []string{r.Kind, r.Name, state, msgs, bytes, maxBytes, drift})
	}
	return cmdutil.PrintTable(io, header, out)
}
