// Package job is `kanade job`: the catalog of job manifests (SPEC-2 §3),
// one file per verb. A job is stored as JSON in KV jobs under its id, with
// the YAML as written in KV jobs_yaml; `kanade exec` runs one.
package job

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

// NewJobCmd is `kanade job`.
func NewJobCmd(f *cmdutil.Factory) *cobra.Command {
	c := &cobra.Command{
		Use:   "job",
		Short: "Manage job manifests: versioned scripts kept in the broker",
		Long: `A job is a YAML manifest kept in the broker and run with ` + "`kanade exec JOB`" + `:

  id: disk-cleanup               # letters, digits, '-' and '_'
  version: "1.4"                 # any string; change it whenever the script changes
  description: Remove temp files older than 7 days
  execute:
    shell: powershell            # powershell, pwsh, cmd or sh
    script: |                    # exactly one of script, script_file, script_object
      Get-ChildItem $env:TEMP -Recurse | Remove-Item -Recurse -Force
    timeout: 10m                 # default 60s
    run_as: system               # system (default), user, system_gui
  staleness: cached              # cached (default), unchecked, {mode: strict, max_cache_age: 1h}
  tags: [maintenance]

It is stored as JSON in KV jobs under its id, and the YAML as written in KV
jobs_yaml. script_file is read relative to the manifest and inlined when the
job is stored; script_object names a script in the catalog (kanade script
publish) and the command carries its SHA-256. Upstream's other keys
(inventory, emit, check, collect, client, finalize, origin, …) are kept as
they are. An unknown key is refused with its dotted path and the file.

Each exec pins the job's version (script_current), so agents refuse a
replayed copy of an older version (exit 124); ` + "`kanade revoke JOB`" + ` stops it
everywhere (exit 126). See docs/jobs.md.`,
		Args: cobra.NoArgs,
	}
	c.AddCommand(
		NewCreateCmd(f, nil),
		NewValidateCmd(f, nil),
		NewListCmd(f, nil),
		NewShowCmd(f, nil),
		NewExportCmd(f, nil),
		NewDeleteCmd(f, nil),
	)
	return c
}

// setupHint is the fix for a missing bucket.
const setupHint = "run `kanade jetstream setup` first"

// notFoundHint is the fix for an unknown job id.
const notFoundHint = "`kanade job list` shows the jobs; `kanade job create FILE` adds one"

// openKV opens bucket, naming the fix when it is missing.
func openKV(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, cmdutil.WithHint(fmt.Errorf("open kv %q: %w", bucket, err), setupHint)
	}
	return kv, nil
}

// checkID refuses an argument that cannot be a job id.
func checkID(id string) error {
	if err := jobs.ValidID(id); err != nil {
		return cmdutil.UsageErrorf("%v", err)
	}
	return nil
}

// getJob reads one job, with the fix when it is missing.
func getJob(ctx context.Context, js jetstream.JetStream, id string) (*jobs.Stored, error) {
	s, err := jobs.Get(ctx, js, id)
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		return nil, cmdutil.WithHint(err, notFoundHint)
	case err != nil && errors.Is(err, jetstream.ErrBucketNotFound):
		return nil, cmdutil.WithHint(err, setupHint)
	}
	return s, err
}

// State is a job's pin and revoke state.
type State struct {
	// Pinned is script_current[id], "" when never exec'd.
	Pinned string `json:"pinned_version"`
	// Status is script_status[id]: REVOKED, ACTIVE or "".
	Status string `json:"status"`
}

// Revoked reports whether agents refuse the job.
func (s State) Revoked() bool { return s.Status == core.ScriptStatusRevoked }

// readStates reads script_current and script_status in one pass each.
func readStates(ctx context.Context, js jetstream.JetStream) (map[string]State, error) {
	pins, err := jobs.ReadWords(ctx, js, core.BucketScriptCurrent)
	if err != nil {
		return nil, err
	}
	status, err := jobs.ReadWords(ctx, js, core.BucketScriptStatus)
	if err != nil {
		return nil, err
	}
	out := map[string]State{}
	for id, v := range pins {
		out[id] = State{Pinned: v, Status: status[id]}
	}
	for id, v := range status {
		s := out[id]
		s.Status = v
		out[id] = s
	}
	return out, nil
}

// source says where a job's script comes from: inline, or the catalog key.
func source(j *jobs.Job) string {
	if j.Execute.ScriptObject != "" {
		return core.ObjectScripts + ":" + j.Execute.ScriptObject
	}
	return "inline"
}

// stateWord is the job's state for tables: revoked, pinned <v> (when the
// pin differs from the stored version), or active.
func stateWord(j *jobs.Job, s State) string {
	switch {
	case s.Revoked():
		return "revoked"
	case s.Pinned != "" && s.Pinned != j.Version:
		return "pinned " + s.Pinned
	}
	return "active"
}

// CompleteJobIDs completes job ids from KV jobs (one pass; nothing on
// error), for the job verbs and `kanade exec`.
func CompleteJobIDs(f *cmdutil.Factory) cobra.CompletionFunc {
	return func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 || f.JetStream == nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*core.DefaultTimeout)
		defer cancel()
		js, err := f.JetStream(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		list, err := jobs.List(ctx, js, nil)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, s := range list {
			if strings.HasPrefix(s.Job.ID, toComplete) {
				out = append(out, s.Job.ID)
			}
		}
		sort.Strings(out)
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
