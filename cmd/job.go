//go:build jobswip

// Unfinished (work in progress, not compiled): see the report of branch wip/jobs.

package cmd

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/jobs"
)

// NewJobCmd is `kanade job`, the catalog of job manifests (SPEC-2 §3).
// When this lands, add NewJobCmd(f) to the root's AddCommand list in
// NewRootCmd (root.go) and "kanade job …" to expectedCommands.
func NewJobCmd(f *cmdutil.Factory) *cobra.Command {
	c := &cobra.Command{
		Use:   "job",
		Short: "Manage job manifests: versioned scripts kept in the broker",
		Long: `A job is a YAML manifest (id, version, execute: {shell, script | script_file |
script_object, timeout, run_as, cwd}, staleness, tags) stored as JSON in KV
jobs, with the YAML as written in KV jobs_yaml. Run one with ` + "`kanade exec JOB`" + `.
See docs/jobs.md.`,
		Args: cobra.NoArgs,
	}
	c.AddCommand(NewJobCreateCmd(f, nil), NewJobValidateCmd(f, nil), NewJobListCmd(f, nil),
		NewJobShowCmd(f, nil), NewJobExportCmd(f, nil), NewJobDeleteCmd(f, nil))
	return c
}

// storedJob is a job read from the broker, with its pin and revoke state.
type storedJob struct {
	Job      *jobs.Job
	Revision uint64
	// Pinned is script_current[id] ("" when unset); Status is script_status[id].
	Pinned, Status string
}

// errJobNotFound is returned when KV jobs has no such job.
var errJobNotFound = errors.New("job not found")

// readJob reads one job.
func readJob(ctx context.Context, js jetstream.JetStream, id string) (*storedJob, error) {
	kv, err := openKV(ctx, js, core.BucketJobs)
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, cmdutil.WithHint(fmt.Errorf("read job %q: %w", id, errJobNotFound), "`kanade job list` shows the jobs; `kanade job create FILE` adds one")
	}
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", core.BucketJobs, id, err)
	}
	j, err := jobs.Decode(e.Value())
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", core.BucketJobs, id, err)
	}
	sj := &storedJob{Job: j, Revision: e.Revision()}
	sj.Pinned = kvString(ctx, js, core.BucketScriptCurrent, id)
	sj.Status = kvString(ctx, js, core.BucketScriptStatus, id)
	return sj, nil
}

// listJobs reads every job, sorted by id. Rows that do not decode are
// reported through warn and left out.
func listJobs(ctx context.Context, js jetstream.JetStream, warn func(string, ...any)) ([]*storedJob, error) {
	kv, err := openKV(ctx, js, core.BucketJobs)
	if err != nil {
		return nil, err
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", core.BucketJobs, err)
	}
	var ids []string
	for k := range keys.Keys() {
		ids = append(ids, k)
	}
	sort.Strings(ids)
	pins := kvAll(ctx, js, core.BucketScriptCurrent)
	status := kvAll(ctx, js, core.BucketScriptStatus)
	var out []*storedJob
	for _, id := range ids {
		e, err := kv.Get(ctx, id)
		if err != nil {
			warn("read %s/%s: %v", core.BucketJobs, id, err)
			continue
		}
		j, err := jobs.Decode(e.Value())
		if err != nil {
			warn("%s/%s: %v", core.BucketJobs, id, err)
			continue
		}
		out = append(out, &storedJob{Job: j, Revision: e.Revision(), Pinned: pins[id], Status: status[id]})
	}
	return out, nil
}

// kvString reads a bare-word value, "" when missing.
func kvString(ctx context.Context, js jetstream.JetStream, bucket, key string) string {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return ""
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(e.Value()))
}

// kvAll reads a whole bucket of bare-word values.
func kvAll(ctx context.Context, js jetstream.JetStream, bucket string) map[string]string {
	out := map[string]string{}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return out
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return out
	}
	defer func() { _ = w.Stop() }()
	for e := range w.Updates() {
		if e == nil {
			break
		}
		out[e.Key()] = strings.TrimSpace(string(e.Value()))
	}
	return out
}

// jobSource says where a job's script comes from.
func jobSource(j *jobs.Job) string {
	if j.Execute.ScriptObject != "" {
		return core.ObjectScripts + ":" + j.Execute.ScriptObject
	}
	return "inline"
}

// jobJSON is one job in `job list --json` and `job show --json`: the stored
// manifest plus its pin and revoke state.
type jobJSON struct {
	Job      *jobs.Job `json:"job"`
	Revision uint64    `json:"revision"`
	Pinned   string    `json:"pinned_version"`
	Status   string    `json:"status"`
}

func toJobJSON(s *storedJob) jobJSON {
	return jobJSON{Job: s.Job, Revision: s.Revision, Pinned: s.Pinned, Status: s.Status}
}

func completeJobs(f *cmdutil.Factory) cobra.CompletionFunc {
	return func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ids := completionQuery(c.Context(), f, func(ctx context.Context, js jetstream.JetStream) ([]string, error) {
			return kvKeys(ctx, js, core.BucketJobs)
		})
		return filterCompletions(ids, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}
