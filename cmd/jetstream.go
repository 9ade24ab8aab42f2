package cmd

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// NewJetstreamCmd is `kanade jetstream`: the broker's streams, KV buckets and
// object stores (SPEC §5). Every subcommand reads the one resource list in
// internal/core.
func NewJetstreamCmd(f *cmdutil.Factory) *cobra.Command {
	c := &cobra.Command{
		Use:   "jetstream",
		Short: "Set up and inspect the broker's JetStream resources",
		Long: `Set up and inspect the JetStream resources kanade uses: six streams, ten KV
buckets and four object stores. setup is idempotent; status reports drift;
delete and reset are dry runs unless --yes is given.`,
		// A word that is no subcommand is a usage error (exit 2):
		// `kanade jetstream stup` must fail, not print help and succeed.
		Args: cobra.ArbitraryArgs,
		RunE: runCommandGroup,
	}
	c.AddCommand(
		NewJetstreamSetupCmd(f, nil),
		NewJetstreamStatusCmd(f, nil),
		NewJetstreamDeleteCmd(f, nil),
		NewJetstreamResetCmd(f, nil),
	)
	return c
}

// jetstreamProfileFlags adds --profile and --replicas, shared by setup,
// status and reset so they all describe the same expected list.
func jetstreamProfileFlags(fs *pflag.FlagSet, profile *string, replicas *int) {
	fs.StringVar(profile, "profile", string(core.ProfileProduction), "byte caps: production, or dev (every max_bytes divided by 64)")
	fs.IntVar(replicas, "replicas", 1, "replica count of every resource (the number of nodes of a clustered broker)")
}

// autoProfileFlag words --profile for the commands that, without it, take
// the profile the broker matches (planCloserProfile).
func autoProfileFlag(fs *pflag.FlagSet) {
	fl := fs.Lookup("profile")
	fl.Usage = "byte caps: production, or dev (every max_bytes divided by 64); default: the profile the broker's resources match, production when there are none"
	fl.DefValue = "" // help must not claim "production" is the default
}

// parseSetupFlags validates --profile and --replicas into core's options.
func parseSetupFlags(profile string, replicas int) (core.SetupOptions, error) {
	p, err := core.ParseProfile(profile)
	if err != nil {
		return core.SetupOptions{}, cmdutil.UsageErrorf("invalid --profile: %v", err)
	}
	if replicas < 1 {
		return core.SetupOptions{}, cmdutil.UsageErrorf("invalid --replicas %d: want 1 or more (the number of nodes of a clustered broker)", replicas)
	}
	if replicas > 5 {
		// JetStream's own limit: an R>5 stream is refused by the broker.
		return core.SetupOptions{}, cmdutil.UsageErrorf("invalid --replicas %d: JetStream allows at most 5", replicas)
	}
	return core.SetupOptions{Profile: p, Replicas: replicas}, nil
}

// setupFlagsHint renders the flags that reproduce so, for "run … setup" advice.
func setupFlagsHint(so core.SetupOptions) string {
	var b strings.Builder
	if so.Profile == core.ProfileDev {
		b.WriteString(" --profile dev")
	}
	if so.Replicas > 1 {
		fmt.Fprintf(&b, " --replicas %d", so.Replicas)
	}
	return b.String()
}

// resourceLabel is how progress and tables name a resource: `stream RESULTS`.
func resourceLabel(r core.Resource) string { return string(r.Kind) + " " + r.Name }

// diffJSON is one drifted field in --json output.
type diffJSON struct {
	Field string `json:"field"`
	Have  string `json:"have"`
	Want  string `json:"want"`
	// InPlace is false when the broker cannot change the field on a live
	// resource: it must be deleted and set up again.
	InPlace bool `json:"in_place"`
}

func diffsJSON(d []core.FieldDiff) []diffJSON {
	out := make([]diffJSON, 0, len(d))
	for _, x := range d {
		out = append(out, diffJSON{Field: x.Field, Have: x.Have, Want: x.Want, InPlace: x.Fixed})
	}
	return out
}

// formatDiff renders drift as `max_age 1h → 720h; replicas 1 → 3`.
func formatDiff(d []core.FieldDiff) string {
	parts := make([]string, 0, len(d))
	for _, x := range d {
		s := fmt.Sprintf("%s %s → %s", x.Field, x.Have, x.Want)
		if !x.Fixed {
			s += " (not in place)"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// jsHumanBytes renders a byte count for people: 512 B, 1.5 KiB, 32 MiB.
func jsHumanBytes(n int64) string {
	if n < 0 {
		return "unlimited"
	}
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + string("KMGTPE"[exp]) + "iB"
}

// jsCount is "1 message", "3 messages".
func jsCount(n uint64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.FormatUint(n, 10) + " " + noun + "s"
}

// planCloserProfile plans the resources against the profile the broker
// matches best when the user named none: production, or dev when that
// drifts less (a dev broker would otherwise show drift on every byte cap).
// `kanade status` and `kanade jetstream status` both use it, so they agree.
func planCloserProfile(ctx context.Context, js jetstream.JetStream, so core.SetupOptions) (core.SetupOptions, []core.ResourceState) {
	so.Profile = core.ProfileProduction
	prod := core.Plan(ctx, js, so)
	if drifted(prod) == 0 {
		return so, prod
	}
	dev := so
	dev.Profile = core.ProfileDev
	if devPlan := core.Plan(ctx, js, dev); drifted(devPlan) < drifted(prod) {
		return dev, devPlan
	}
	return so, prod
}

// drifted counts the resources that exist but differ from the plan.
func drifted(plan []core.ResourceState) int {
	n := 0
	for _, st := range plan {
		if st.Action == core.ActionUpdate || st.Action == core.ActionRecreate {
			n++
		}
	}
	return n
}
