package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// JetstreamSetupOptions are `kanade jetstream setup`'s dependencies and flags.
type JetstreamSetupOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	// AutoProfile is set when --profile was not given: keep the profile
	// the broker's resources match best, by the rule `jetstream status`
	// and `kanade status` use (production on an empty broker).
	AutoProfile bool

	Setup  core.SetupOptions
	DryRun bool
	JSON   bool
}

// NewJetstreamSetupCmd is `kanade jetstream setup`.
func NewJetstreamSetupCmd(f *cmdutil.Factory, runF func(context.Context, *JetstreamSetupOptions) error) *cobra.Command {
	opts := &JetstreamSetupOptions{
		IO:        f.IO,
		JetStream: func(ctx context.Context) (jetstream.JetStream, error) { return f.JetStream(ctx) },
	}
	var profile string
	var replicas int
	c := &cobra.Command{
		Use:   "setup",
		Short: "Create or update every JetStream resource kanade uses",
		Long: `Create or update every stream, KV bucket and object store kanade uses
(streams INVENTORY, RESULTS, EXEC, EVENTS, AUDIT, OBS_EVENTS; ten KV buckets;
four object stores). Safe to run again: existing resources are compared and reconciled,
never recreated. --dry-run prints the plan and changes nothing.

JetStream reserves every max_bytes up front (about 5.3 GiB in all). A broker
with less room refuses (error 10047): use --profile dev, which keeps every
name, subject and age and divides the byte caps by 64. Without --profile,
setup keeps the profile the broker's resources match best (production on an
empty broker), the rule ` + "`jetstream status`" + ` and ` + "`kanade status`" + ` use: a dev
broker is never grown to production caps unless --profile production says so.`,
		Example: `  kanade jetstream setup --dry-run
  kanade jetstream setup --profile dev
  kanade jetstream setup --replicas 3 --json`,
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
			return runJetstreamSetup(c.Context(), opts)
		},
	}
	jetstreamProfileFlags(c.Flags(), &profile, &replicas)
	autoProfileFlag(c.Flags())
	c.Flags().BoolVar(&opts.DryRun, "dry-run", false, "print the plan (create / update with the field diff / unchanged) and change nothing")
	c.Flags().BoolVar(&opts.JSON, "json", false, "print the result as JSON")
	return c
}

// setupJSON is `jetstream setup --json` (and the setup half of reset).
type setupJSON struct {
	DryRun    bool                `json:"dry_run"`
	Profile   string              `json:"profile"`
	Replicas  int                 `json:"replicas"`
	Resources []setupResourceJSON `json:"resources"`
	Counts    setupCounts         `json:"counts"`
}

// setupResourceJSON is one resource. Action is what setup did (or, in a dry
// run, would do): create, update, unchanged, recreate (differs in a way the
// broker cannot change in place; kept as is) or unknown (the broker did not
// answer). A failed resource keeps its planned action and has Error set.
type setupResourceJSON struct {
	Kind    string     `json:"kind"`
	Name    string     `json:"name"`
	Stream  string     `json:"stream"`
	Action  string     `json:"action"`
	Diff    []diffJSON `json:"diff"`
	Warning string     `json:"warning"`
	Error   string     `json:"error"`
}

// setupCounts counts resources by action; Failed ones are counted only there.
type setupCounts struct {
	Total     int `json:"total"`
	Create    int `json:"create"`
	Update    int `json:"update"`
	Unchanged int `json:"unchanged"`
	Recreate  int `json:"recreate"`
	Unknown   int `json:"unknown"`
	Failed    int `json:"failed"`
}

func (c *setupCounts) add(a core.Action, failed bool) {
	c.Total++
	if failed {
		c.Failed++
		return
	}
	switch a {
	case core.ActionCreate:
		c.Create++
	case core.ActionUpdate:
		c.Update++
	case core.ActionUnchanged:
		c.Unchanged++
	case core.ActionRecreate:
		c.Recreate++
	default:
		c.Unknown++
	}
}

func runJetstreamSetup(ctx context.Context, opts *JetstreamSetupOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	var plan []core.ResourceState
	if opts.AutoProfile {
		opts.Setup, plan = planCloserProfile(ctx, js, opts.Setup)
		if opts.Setup.Profile == core.ProfileDev {
			fmt.Fprintln(opts.IO.ErrOut, "profile dev: the broker's resources have the dev byte caps (pass --profile production to grow them)")
		}
	}
	if opts.DryRun {
		if plan == nil {
			plan = core.Plan(ctx, js, opts.Setup)
		}
		return printSetupPlan(opts.IO, opts.JSON, opts.Setup, plan)
	}
	out, err := applySetup(ctx, opts.IO, js, opts.Setup)
	if opts.JSON {
		if jerr := cmdutil.WriteJSON(opts.IO.Out, out); jerr != nil {
			return jerr
		}
	} else {
		fmt.Fprintln(opts.IO.Out, setupSummary(out.Counts))
	}
	return err
}

// applySetup runs core.Setup with one progress line per resource on ErrOut
// and returns the --json document. Reset reuses it.
func applySetup(ctx context.Context, io *cmdutil.IOStreams, js jetstream.JetStream, so core.SetupOptions) (setupJSON, error) {
	st := io.ErrStyles()
	out := setupJSON{Profile: string(so.Profile), Replicas: max(so.Replicas, 1), Resources: []setupResourceJSON{}}
	results, err := core.Setup(ctx, js, so, func(r core.SetupResult) {
		fmt.Fprintln(io.ErrOut, setupProgressLine(st, r))
	})
	for _, r := range results {
		out.Counts.add(r.Done, r.Err != nil)
		out.Resources = append(out.Resources, setupResourceJSON{
			Kind: string(r.Kind), Name: r.Name, Stream: r.StreamName(),
			Action: string(r.Done), Diff: diffsJSON(r.Diff),
			Warning: r.Warning, Error: jsErrString(r.Err),
		})
	}
	if out.Counts.Recreate > 0 {
		fmt.Fprintf(io.ErrOut, "note: %d resource(s) kept as they are; to reconcile one, delete it with `kanade jetstream delete KIND NAME --yes` (its data goes too), then run setup again\n",
			out.Counts.Recreate)
	}
	return out, setupErrorHint(err)
}

// jsErrReplicasNotSupported is JetStream's "replicas > 1 not supported in
// non-clustered mode".
const jsErrReplicasNotSupported jetstream.ErrorCode = 10074

// setupErrorHint attaches the fix for setup failures Main has no hint for.
// (10047, insufficient resources, is matched by Main through core's sentinel.)
func setupErrorHint(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrReplicasNotSupported {
		return cmdutil.WithHint(err, "the broker is a single server: drop --replicas (or run a cluster, e.g. `kanade devbroker --cluster 3`)")
	}
	return err
}

// setupProgressLine is `✓ created stream RESULTS` and friends.
func setupProgressLine(st cmdutil.Styles, r core.SetupResult) string {
	label := resourceLabel(r.Resource)
	if r.Err != nil {
		return st.Err.Render("✗ failed") + " " + label + ": " + r.Err.Error()
	}
	switch r.Done {
	case core.ActionCreate:
		return st.OK.Render("✓ created") + " " + label
	case core.ActionUpdate:
		return st.Warn.Render("~ updated") + " " + label + ": " + formatDiff(r.Diff)
	case core.ActionUnchanged:
		return st.Faint.Render("= unchanged") + " " + label
	case core.ActionRecreate:
		w := r.Warning
		if w == "" {
			w = "differs in a way the broker cannot change in place: " + formatDiff(r.Diff)
		}
		return st.Warn.Render("! kept") + " " + label + " (" + w + ")"
	}
	return "? " + label
}

// setupSummary is `27 resources: 3 created, 1 updated, 23 unchanged`.
func setupSummary(c setupCounts) string {
	parts := []string{fmt.Sprintf("%d created", c.Create), fmt.Sprintf("%d updated", c.Update), fmt.Sprintf("%d unchanged", c.Unchanged)}
	if c.Recreate > 0 {
		parts = append(parts, fmt.Sprintf("%d kept with a warning", c.Recreate))
	}
	if c.Unknown > 0 {
		parts = append(parts, fmt.Sprintf("%d unknown", c.Unknown))
	}
	if c.Failed > 0 {
		parts = append(parts, fmt.Sprintf("%d failed", c.Failed))
	}
	return fmt.Sprintf("%d resources: %s", c.Total, strings.Join(parts, ", "))
}

// printSetupPlan prints a dry run: one line per resource with the action and
// the field diff (have → want), then a summary. Nothing is changed.
func printSetupPlan(io *cmdutil.IOStreams, asJSON bool, so core.SetupOptions, plan []core.ResourceState) error {
	out := setupJSON{DryRun: true, Profile: string(so.Profile), Replicas: max(so.Replicas, 1), Resources: []setupResourceJSON{}}
	var firstErr error
	for _, p := range plan {
		out.Counts.add(p.Action, false)
		out.Resources = append(out.Resources, setupResourceJSON{
			Kind: string(p.Kind), Name: p.Name, Stream: p.StreamName(),
			Action: string(p.Action), Diff: diffsJSON(p.Diff), Error: jsErrString(p.Err),
		})
		if p.Err != nil && firstErr == nil {
			firstErr = p.Err
		}
	}
	if asJSON {
		if err := cmdutil.WriteJSON(io.Out, out); err != nil {
			return err
		}
	} else if err := writePlanText(io.Out, io.OutStyles(), plan, out.Counts); err != nil {
		return err
	}
	for _, p := range plan {
		if p.Action == core.ActionRecreate {
			fmt.Fprintf(io.ErrOut, "note: %s cannot be changed in place; `kanade jetstream delete %s %s --yes` then setup recreates it (its data goes too)\n",
				resourceLabel(p.Resource), p.Kind, p.Name)
		}
	}
	fmt.Fprintln(io.ErrOut, "dry run: nothing was changed; run without --dry-run to apply")
	if firstErr != nil {
		return fmt.Errorf("plan JetStream setup: %d resource(s) could not be read: %w", out.Counts.Unknown, firstErr)
	}
	return nil
}

func writePlanText(w io.Writer, st cmdutil.Styles, plan []core.ResourceState, c setupCounts) error {
	width := len("unchanged")
	labelWidth := 0
	for _, p := range plan {
		labelWidth = max(labelWidth, len(resourceLabel(p.Resource)))
	}
	for _, p := range plan {
		action := string(p.Action)
		pad := strings.Repeat(" ", width-len(action)+1)
		var glyph string
		var style = st.Faint
		switch p.Action {
		case core.ActionCreate:
			glyph, style = "+", st.OK
		case core.ActionUpdate:
			glyph, style = "~", st.Warn
		case core.ActionUnchanged:
			glyph = "="
		case core.ActionRecreate:
			glyph, style = "!", st.Err
		default:
			glyph, style = "?", st.Err
		}
		line := style.Render(glyph+" "+action) + pad + resourceLabel(p.Resource)
		switch {
		case p.Err != nil:
			line += ": " + p.Err.Error()
		case len(p.Diff) > 0:
			line += strings.Repeat(" ", labelWidth-len(resourceLabel(p.Resource))+2) + formatDiff(p.Diff)
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	parts := []string{fmt.Sprintf("%d to create", c.Create), fmt.Sprintf("%d to update", c.Update), fmt.Sprintf("%d unchanged", c.Unchanged)}
	if c.Recreate > 0 {
		parts = append(parts, fmt.Sprintf("%d to recreate by hand", c.Recreate))
	}
	if c.Unknown > 0 {
		parts = append(parts, fmt.Sprintf("%d unknown", c.Unknown))
	}
	_, err := fmt.Fprintf(w, "%d resources: %s\n", c.Total, strings.Join(parts, ", "))
	return err
}

func jsErrString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
