package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
	"github.com/kanadehq/kanade-go/internal/fleetconfig"
)

// Operations of `kanade config`.
const (
	configGet       = "get"
	configSet       = "set"
	configUnset     = "unset"
	configClear     = "clear"
	configEffective = "effective"
)

// ConfigOptions are the inputs of the `kanade config` verbs.
type ConfigOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)
	Now       func() time.Time

	// Op is get, set, unset, clear or effective.
	Op string
	// Group and PC pick the scope; neither means global.
	Group string
	PC    string
	// Set holds the validated field → JSON value pairs of `set`.
	Set map[string]json.RawMessage
	// Unset lists the fields of `unset`.
	Unset []string
	// Target is the pc of `effective`.
	Target string
	JSON   bool
}

// ScopeKey is the agent_config key the options address.
func (o *ConfigOptions) ScopeKey() string {
	switch {
	case o.Group != "":
		return core.ConfigKeyGroup(o.Group)
	case o.PC != "":
		return core.ConfigKeyPC(o.PC)
	}
	return core.ConfigKeyGlobal
}

// ConfigGetResult is `kanade config get --json`: the scope's key, its
// revision (0 when the key does not exist) and its stored value as is.
type ConfigGetResult struct {
	Key      string                     `json:"key"`
	Revision uint64                     `json:"revision"`
	Scope    map[string]json.RawMessage `json:"scope"`
}

// ConfigEffectiveResult is `kanade config effective PC --json`.
type ConfigEffectiveResult struct {
	PCID   string              `json:"pc_id"`
	Groups []string            `json:"groups"`
	Config EffectiveConfigJSON `json:"config"`
	// Sources names, per field, the agent_config key whose value applies
	// ("default" when none does).
	Sources   map[string]string `json:"sources"`
	Conflicts []ConfigConflict  `json:"conflicts"`
	Malformed []ConfigMalformed `json:"malformed"`
}

// EffectiveConfigJSON is an effective config in upstream's EffectiveConfig
// JSON shape: target_version null when no scope sets one, durations in the
// short humantime form.
type EffectiveConfigJSON struct {
	TargetVersion       *string       `json:"target_version"`
	TargetVersionJitter core.Duration `json:"target_version_jitter"`
	HeartbeatInterval   core.Duration `json:"heartbeat_interval"`
	InventoryInterval   core.Duration `json:"inventory_interval"`
	InventoryJitter     core.Duration `json:"inventory_jitter"`
	InventoryEnabled    bool          `json:"inventory_enabled"`
	// MaxLocalConcurrent is the run-slot count; 0 means the agent's own
	// max_concurrent.
	MaxLocalConcurrent int `json:"max_local_concurrent"`
}

// FieldValue renders one field for humans.
func (c EffectiveConfigJSON) FieldValue(field string) string {
	switch field {
	case fleetconfig.FieldTargetVersion:
		if c.TargetVersion == nil {
			return "(none)"
		}
		return *c.TargetVersion
	case fleetconfig.FieldTargetVersionJitter:
		return c.TargetVersionJitter.String()
	case fleetconfig.FieldHeartbeatInterval:
		return c.HeartbeatInterval.String()
	case fleetconfig.FieldInventoryInterval:
		return c.InventoryInterval.String()
	case fleetconfig.FieldInventoryJitter:
		return c.InventoryJitter.String()
	case fleetconfig.FieldInventoryEnabled:
		return strconv.FormatBool(c.InventoryEnabled)
	case fleetconfig.FieldMaxLocalConcurrent:
		if c.MaxLocalConcurrent == 0 {
			return "per agent"
		}
		return strconv.Itoa(c.MaxLocalConcurrent)
	}
	return ""
}

// ConfigConflict is a field two or more of the pc's groups give different
// values; groups are in application order, the last one wins.
type ConfigConflict struct {
	Field  string   `json:"field"`
	Groups []string `json:"groups"`
	Values []string `json:"values"`
	Winner string   `json:"winner"`
}

// ConfigMalformed is a value in one of the pc's scopes that cannot be used;
// that scope gives the built-in default for the field instead.
type ConfigMalformed struct {
	Field string `json:"field"`
	Scope string `json:"scope"`
	Value string `json:"value"`
	Error string `json:"error"`
}

// effectiveFor resolves pc's config with the agent's own resolver, so what
// the operator sees is what the agent runs with.
func effectiveFor(scopes *fleet.Scopes, pc string, groups []string) *ConfigEffectiveResult {
	eff, conflicts := fleetconfig.Resolve(scopes.Rows, pc, groups)
	res := &ConfigEffectiveResult{
		PCID: pc, Groups: groups,
		Config: EffectiveConfigJSON{
			TargetVersionJitter: core.Duration(eff.TargetVersionJitter),
			HeartbeatInterval:   core.Duration(eff.HeartbeatInterval),
			InventoryInterval:   core.Duration(eff.InventoryInterval),
			InventoryJitter:     core.Duration(eff.InventoryJitter),
			InventoryEnabled:    eff.InventoryEnabled,
			MaxLocalConcurrent:  eff.MaxLocalConcurrent,
		},
		Sources: map[string]string{
			fleetconfig.FieldTargetVersion:       eff.Sources.TargetVersion,
			fleetconfig.FieldTargetVersionJitter: eff.Sources.TargetVersionJitter,
			fleetconfig.FieldHeartbeatInterval:   eff.Sources.HeartbeatInterval,
			fleetconfig.FieldInventoryInterval:   eff.Sources.InventoryInterval,
			fleetconfig.FieldInventoryJitter:     eff.Sources.InventoryJitter,
			fleetconfig.FieldInventoryEnabled:    eff.Sources.InventoryEnabled,
			fleetconfig.FieldMaxLocalConcurrent:  eff.Sources.MaxLocalConcurrent,
		},
		Conflicts: []ConfigConflict{},
		Malformed: []ConfigMalformed{},
	}
	if eff.TargetVersion != "" {
		v := eff.TargetVersion
		res.Config.TargetVersion = &v
	}
	for _, c := range conflicts {
		res.Conflicts = append(res.Conflicts, ConfigConflict{Field: c.Field, Groups: c.Groups, Values: c.Values, Winner: c.Groups[len(c.Groups)-1]})
	}
	keys := []string{core.ConfigKeyGlobal}
	for _, g := range groups {
		keys = append(keys, core.ConfigKeyGroup(g))
	}
	keys = append(keys, core.ConfigKeyPC(pc))
	for _, key := range keys {
		row, ok := scopes.Rows[key]
		if !ok {
			continue
		}
		for _, bad := range fleetconfig.CheckScope(key, row) {
			res.Malformed = append(res.Malformed, ConfigMalformed{Field: bad.Field, Scope: bad.Key, Value: bad.Value, Error: bad.Err.Error()})
		}
	}
	return res
}

// NewConfigCmd is `kanade config`.
func NewConfigCmd(f *cmdutil.Factory, runF func(context.Context, *ConfigOptions) error) *cobra.Command {
	c := &cobra.Command{
		Use:   "config",
		Short: "Read and change the layered agent configuration",
		Long: `Read and change agent_config, the fleet-tunable settings of every agent.

Scopes: global (the default), --group G (groups.G) and --pc P (pcs.P); give at
most one. An agent's effective config is the built-in defaults, then global,
then each of its groups in alphabetical order (last wins), then its pc scope.

Fields: ` + strings.Join(fleetconfig.Fields, ", ") + `.
Durations take 30s, 10m, 24h, 1d, "2h 30m"; inventory_enabled takes true/false.

Every change is a compare-and-swap read-modify-write: fields you do not name
are kept, and a concurrent writer makes kanade retry instead of losing a write.`,
		Args: cobra.NoArgs,
	}
	newOpts := func(op string) *ConfigOptions {
		return &ConfigOptions{IO: f.IO, JetStream: f.JetStream, Now: f.Now, Op: op}
	}
	run := func(c *cobra.Command, opts *ConfigOptions) error {
		if runF != nil {
			return runF(c.Context(), opts)
		}
		return runConfig(c.Context(), opts)
	}
	scopeFlags := func(c *cobra.Command, opts *ConfigOptions) {
		c.Flags().StringVar(&opts.Group, "group", "", "the scope of group `G`")
		c.Flags().StringVar(&opts.PC, "pc", "", "the scope of pc `P`")
		_ = c.RegisterFlagCompletionFunc("group", completeGroups(f))
		_ = c.RegisterFlagCompletionFunc("pc", completePCFlag(f))
	}

	getOpts := newOpts(configGet)
	get := &cobra.Command{
		Use:   "get [--group G | --pc P]",
		Short: "Print the fields one scope sets",
		Long: `Print the fields the scope sets, one "field value" line each (nothing when
the scope is empty). --json prints {"key", "revision", "scope"} with the
stored value as is.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := validateScope(getOpts); err != nil {
				return err
			}
			return run(c, getOpts)
		},
	}
	scopeFlags(get, getOpts)
	get.Flags().BoolVar(&getOpts.JSON, "json", false, "print as JSON")

	setOpts := newOpts(configSet)
	setCmd := &cobra.Command{
		Use:     "set FIELD=VALUE... [--group G | --pc P]",
		Short:   "Set fields in one scope",
		Example: "  kanade config set heartbeat_interval=15s\n  kanade config set inventory_enabled=false inventory_interval=12h --group lab\n  kanade config set heartbeat_interval=1s --pc dev-pc-1",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := validateScope(setOpts); err != nil {
				return err
			}
			fields, err := parseConfigSets(args)
			if err != nil {
				return err
			}
			setOpts.Set = fields
			return run(c, setOpts)
		},
	}
	scopeFlags(setCmd, setOpts)

	unsetOpts := newOpts(configUnset)
	unset := &cobra.Command{
		Use:     "unset FIELD... [--group G | --pc P]",
		Short:   "Remove fields from one scope",
		Example: "  kanade config unset heartbeat_interval --pc dev-pc-1",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := validateScope(unsetOpts); err != nil {
				return err
			}
			for _, a := range args {
				if !fleetconfig.IsField(a) && !fleetconfig.IsTolerated(a) {
					return &cmdutil.UsageError{Err: &fleetconfig.ErrUnknownField{Field: a}}
				}
			}
			unsetOpts.Unset = args
			return run(c, unsetOpts)
		},
	}
	scopeFlags(unset, unsetOpts)

	clearOpts := newOpts(configClear)
	clearCmd := &cobra.Command{
		Use:     "clear [--group G | --pc P]",
		Short:   "Delete one scope entirely",
		Example: "  kanade config clear --group lab",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := validateScope(clearOpts); err != nil {
				return err
			}
			return run(c, clearOpts)
		},
	}
	scopeFlags(clearCmd, clearOpts)

	effOpts := newOpts(configEffective)
	eff := &cobra.Command{
		Use:               "effective PC",
		ValidArgsFunction: completePCs(f),
		Short:             "Show the config one PC resolves to",
		Long: `Resolve PC's effective config the way the agent does: defaults, global, its
groups from agent_groups in alphabetical order, its own scope. Shows where
each value comes from, any field two of its groups both set, and malformed
durations (they fall back to the built-in default).`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			effOpts.Target = args[0]
			if !core.ValidToken(effOpts.Target) {
				return cmdutil.UsageErrorf("invalid pc id %q: no dots, wildcards or spaces", effOpts.Target)
			}
			return run(c, effOpts)
		},
	}
	eff.Flags().BoolVar(&effOpts.JSON, "json", false, "print as JSON")

	c.AddCommand(get, setCmd, unset, clearCmd, eff)
	return c
}

func validateScope(o *ConfigOptions) error {
	if o.Group != "" && o.PC != "" {
		return cmdutil.UsageErrorf("give at most one scope: --group or --pc (none means global)")
	}
	if o.Group != "" && (!core.ValidToken(o.Group) || !validKVKey(o.Group)) {
		return cmdutil.UsageErrorf("invalid --group %q: use letters, digits, '-', '_'", o.Group)
	}
	if o.PC != "" && (!core.ValidToken(o.PC) || !validKVKey(o.PC)) {
		return cmdutil.UsageErrorf("invalid --pc %q: use letters, digits, '-', '_'", o.PC)
	}
	return nil
}

// parseConfigSets validates FIELD=VALUE arguments.
func parseConfigSets(args []string) (map[string]json.RawMessage, error) {
	out := make(map[string]json.RawMessage, len(args))
	for _, a := range args {
		field, value, ok := strings.Cut(a, "=")
		if !ok || field == "" {
			return nil, cmdutil.UsageErrorf("expected FIELD=VALUE, got %q", a)
		}
		if _, dup := out[field]; dup {
			return nil, cmdutil.UsageErrorf("%s is given twice", field)
		}
		raw, err := fleetconfig.ParseFieldValue(field, value)
		if err != nil {
			return nil, &cmdutil.UsageError{Err: err}
		}
		out[field] = raw
	}
	return out, nil
}

func runConfig(ctx context.Context, opts *ConfigOptions) error {
	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	kv, err := openKV(ctx, js, core.BucketAgentConfig)
	if err != nil {
		return err
	}
	switch opts.Op {
	case configGet:
		return configGetRun(ctx, kv, opts)
	case configSet, configUnset:
		return configEditRun(ctx, js, kv, opts)
	case configClear:
		return configClearRun(ctx, js, kv, opts)
	case configEffective:
		return configEffectiveRun(ctx, js, kv, opts)
	}
	return fmt.Errorf("unknown config operation %q", opts.Op)
}

func configGetRun(ctx context.Context, kv jetstream.KeyValue, opts *ConfigOptions) error {
	key := opts.ScopeKey()
	res := ConfigGetResult{Key: key, Scope: map[string]json.RawMessage{}}
	e, err := kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return fmt.Errorf("read %s/%s: %w", core.BucketAgentConfig, key, err)
	default:
		res.Revision = e.Revision()
		if err := json.Unmarshal(e.Value(), &res.Scope); err != nil {
			return fmt.Errorf("read %s/%s: the value is not a JSON object: %w", core.BucketAgentConfig, key, err)
		}
		if res.Scope == nil {
			res.Scope = map[string]json.RawMessage{}
		}
	}
	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, res)
	}
	if len(res.Scope) == 0 {
		fmt.Fprintf(opts.IO.ErrOut, "%s: nothing set\n", key)
		return nil
	}
	fmt.Fprintf(opts.IO.ErrOut, "%s (revision %d)\n", key, res.Revision)
	var rows [][2]string
	for _, f := range scopeFieldOrder(res.Scope) {
		rows = append(rows, [2]string{f, rawValue(res.Scope[f])})
	}
	return writeKV(opts.IO.Out, rows)
}

// scopeFieldOrder lists a scope's fields: the known ones in display order,
// then any others alphabetically.
func scopeFieldOrder(obj map[string]json.RawMessage) []string {
	var out, extra []string
	for _, f := range fleetconfig.Fields {
		if _, ok := obj[f]; ok {
			out = append(out, f)
		}
	}
	for f := range obj {
		if !fleetconfig.IsField(f) {
			extra = append(extra, f)
		}
	}
	sort.Strings(extra)
	return append(out, extra...)
}

// rawValue renders a JSON value for humans: strings unquoted.
func rawValue(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

func configEditRun(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, opts *ConfigOptions) error {
	key := opts.ScopeKey()
	rev, changed, err := cmdutil.CASUpdate(ctx, kv, key, func(obj map[string]json.RawMessage) (bool, error) {
		changed := false
		for f, v := range opts.Set {
			if old, ok := obj[f]; !ok || string(old) != string(v) {
				obj[f] = v
				changed = true
			}
		}
		for _, f := range opts.Unset {
			if _, ok := obj[f]; ok {
				delete(obj, f)
				changed = true
			}
		}
		return changed, nil
	})
	if err != nil {
		return err
	}
	var parts []string
	fields := map[string]any{}
	for _, f := range sortedKeys(opts.Set) {
		parts = append(parts, f+"="+rawValue(opts.Set[f]))
		fields[f] = opts.Set[f]
	}
	for _, f := range opts.Unset {
		parts = append(parts, f)
		fields[f] = nil
	}
	st := opts.IO.ErrStyles()
	if !changed {
		fmt.Fprintf(opts.IO.ErrOut, "%s already as asked (%s); nothing written\n", key, strings.Join(parts, " "))
		return nil
	}
	cmdutil.PublishAudit(ctx, js, opts.IO.ErrOut, opts.Now(), "config_"+opts.Op, key, map[string]any{"key": key, "fields": fields, "revision": rev})
	fmt.Fprintf(opts.IO.ErrOut, "%s %s %s on %s (revision %d)\n", st.OK.Render("✓"), opts.Op, strings.Join(parts, " "), key, rev)
	return nil
}

func sortedKeys(m map[string]json.RawMessage) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func configClearRun(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, opts *ConfigOptions) error {
	key := opts.ScopeKey()
	if _, err := kv.Get(ctx, key); errors.Is(err, jetstream.ErrKeyNotFound) {
		fmt.Fprintf(opts.IO.ErrOut, "%s is not set; nothing to clear\n", key)
		return nil
	}
	if err := kv.Delete(ctx, key); err != nil {
		return fmt.Errorf("delete %s/%s: %w", core.BucketAgentConfig, key, err)
	}
	cmdutil.PublishAudit(ctx, js, opts.IO.ErrOut, opts.Now(), "config_clear", key, map[string]any{"key": key})
	st := opts.IO.ErrStyles()
	fmt.Fprintf(opts.IO.ErrOut, "%s cleared %s\n", st.OK.Render("✓"), key)
	return nil
}

func configEffectiveRun(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, opts *ConfigOptions) error {
	res, err := resolveEffective(ctx, js, kv, opts.Target)
	if err != nil {
		return err
	}
	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, res)
	}
	return writeEffective(opts.IO, res)
}

// resolveEffective reads agent_config and pc's agent_groups row and resolves.
func resolveEffective(ctx context.Context, js jetstream.JetStream, cfgKV jetstream.KeyValue, pc string) (*ConfigEffectiveResult, error) {
	scopes, err := fleet.ReadScopes(ctx, cfgKV)
	if err != nil {
		return nil, err
	}
	groups, err := readGroupsOf(ctx, js, pc)
	if err != nil {
		return nil, err
	}
	return effectiveFor(scopes, pc, groups), nil
}

// readGroupsOf returns pc's groups from agent_groups (empty when none).
func readGroupsOf(ctx context.Context, js jetstream.JetStream, pc string) ([]string, error) {
	kv, err := openKV(ctx, js, core.BucketAgentGroups)
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, pc)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return []string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", core.BucketAgentGroups, pc, err)
	}
	var g core.AgentGroups
	if err := json.Unmarshal(e.Value(), &g); err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", core.BucketAgentGroups, pc, err)
	}
	return core.NormalizeGroups(g.Groups), nil
}

// writeEffective prints the effective config: the groups, a field table with
// the scope each value comes from, then conflicts and malformed values.
func writeEffective(io *cmdutil.IOStreams, r *ConfigEffectiveResult) error {
	groups := "(none)"
	if len(r.Groups) > 0 {
		groups = strings.Join(r.Groups, ", ")
	}
	if err := writeKV(io.Out, [][2]string{{"pc", r.PCID}, {"groups", groups}}); err != nil {
		return err
	}
	fmt.Fprintln(io.Out)
	rows := make([][]string, 0, len(fleetconfig.Fields))
	for _, f := range fleetconfig.Fields {
		rows = append(rows, []string{f, r.Config.FieldValue(f), r.Sources[f]})
	}
	if err := cmdutil.PrintTable(io, []string{"FIELD", "VALUE", "FROM"}, rows); err != nil {
		return err
	}
	st := io.OutStyles()
	for _, c := range r.Conflicts {
		fmt.Fprintf(io.Out, "%s %s is set by groups %s; %s wins (alphabetical, last wins)\n", st.Warn.Render("conflict:"), c.Field, conflictList(c), c.Winner)
	}
	for _, m := range r.Malformed {
		fmt.Fprintf(io.Out, "%s %s = %q in %s cannot be used (%s); that scope gives the default instead\n", st.Warn.Render("malformed:"), m.Field, m.Value, m.Scope, m.Error)
	}
	return nil
}

// conflictList renders "canary=10s, wave1=20s".
func conflictList(c ConfigConflict) string {
	parts := make([]string, len(c.Groups))
	for i, g := range c.Groups {
		parts[i] = g
		if i < len(c.Values) {
			parts[i] += "=" + c.Values[i]
		}
	}
	return strings.Join(parts, ", ")
}
