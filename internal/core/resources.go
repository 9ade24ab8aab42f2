package core

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Kind is the kind of a JetStream resource.
type Kind string

// Resource kinds, as `kanade jetstream delete KIND NAME` spells them.
const (
	KindStream Kind = "stream"
	KindKV     Kind = "kv"
	KindObject Kind = "object"
)

// ParseKind reads a KIND argument; it accepts a few common spellings.
func ParseKind(s string) (Kind, error) {
	switch s {
	case "stream", "streams":
		return KindStream, nil
	case "kv", "bucket", "key-value", "keyvalue":
		return KindKV, nil
	case "object", "obj", "objects", "object-store", "objectstore":
		return KindObject, nil
	}
	return "", fmt.Errorf("unknown resource kind %q (want stream, kv or object)", s)
}

// Profile selects the byte caps of the resource list.
type Profile string

// Profiles of `jetstream setup --profile`.
const (
	ProfileProduction Profile = "production"
	ProfileDev        Profile = "dev"
)

// DevDivisor divides every byte cap in the dev profile (SPEC §5).
const DevDivisor = 64

// ParseProfile reads a --profile value.
func ParseProfile(s string) (Profile, error) {
	switch Profile(s) {
	case ProfileProduction, "":
		return ProfileProduction, nil
	case ProfileDev:
		return ProfileDev, nil
	}
	return "", fmt.Errorf("unknown profile %q (want production or dev)", s)
}

// Resource is one JetStream resource kanade expects (SPEC §5). Every KV bucket
// and object store is backed by a stream; the fields here are the ones setup
// owns and compares.
type Resource struct {
	Kind     Kind
	Name     string
	Subjects []string      // streams only
	MaxAge   time.Duration // 0 = unlimited
	MaxBytes int64         // -1 = unlimited
	// MaxMsgsPerSubject is 1 for EXEC; for KV buckets it is the history.
	MaxMsgsPerSubject int64
	// MaxConsumers is the stream's consumer limit (streams only; 0 leaves
	// the server's default, which nats-server sets to 1,000 per stream).
	MaxConsumers int
	Replicas     int
}

// StreamName is the name of the stream behind the resource.
func (r Resource) StreamName() string {
	switch r.Kind {
	case KindKV:
		return "KV_" + r.Name
	case KindObject:
		return "OBJ_" + r.Name
	}
	return r.Name
}

// String names the resource for humans: `stream "RESULTS"`.
func (r Resource) String() string { return fmt.Sprintf("%s %q", r.Kind, r.Name) }

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
	day = 24 * time.Hour
)

// canonical is the one list of resources (SPEC §5); setup, status, delete and
// reset all read it through Resources.
var canonical = []Resource{
	{Kind: KindStream, Name: StreamInventory, Subjects: []string{SubjectInventoryWildcard}, MaxAge: 90 * day, MaxBytes: gib},
	{Kind: KindStream, Name: StreamResults, Subjects: []string{SubjectResultsWildcard}, MaxAge: 30 * day, MaxBytes: 2 * gib},
	// Every agent holds one replay consumer on EXEC: the server's default
	// limit of 1,000 consumers per stream would stop a fleet at 1,000 PCs.
	{Kind: KindStream, Name: StreamExec, Subjects: []string{SubjectCommandsWildcard}, MaxAge: 7 * day, MaxBytes: 64 * mib, MaxMsgsPerSubject: 1, MaxConsumers: ExecMaxConsumers},
	{Kind: KindStream, Name: StreamEvents, Subjects: []string{SubjectEventsWildcard}, MaxAge: 7 * day, MaxBytes: 256 * mib},
	{Kind: KindStream, Name: StreamAudit, Subjects: []string{SubjectAuditWildcard}, MaxAge: 90 * day, MaxBytes: 512 * mib},
	{Kind: KindStream, Name: StreamObsEvents, Subjects: []string{SubjectObsWildcard}, MaxAge: 90 * day, MaxBytes: 512 * mib},
	{Kind: KindStream, Name: StreamNotifications, Subjects: []string{SubjectNotificationsWildcard}, MaxAge: 90 * day, MaxBytes: 512 * mib},
	{Kind: KindKV, Name: BucketScriptCurrent, MaxMsgsPerSubject: 5, MaxBytes: -1},
	{Kind: KindKV, Name: BucketScriptStatus, MaxMsgsPerSubject: 5, MaxBytes: -1},
	{Kind: KindKV, Name: BucketAgentsState, MaxMsgsPerSubject: 1, MaxBytes: -1},
	// History 1 (SPEC-2 §1): agents read only the current value, and a
	// replayed older revision churned subscriptions and rollouts upstream.
	{Kind: KindKV, Name: BucketAgentConfig, MaxMsgsPerSubject: 1, MaxBytes: -1},
	{Kind: KindKV, Name: BucketAgentGroups, MaxMsgsPerSubject: 1, MaxBytes: -1},
	{Kind: KindKV, Name: BucketAgentGroupsDerived, MaxMsgsPerSubject: 1, MaxBytes: -1},
	{Kind: KindKV, Name: BucketAgentMeta, MaxMsgsPerSubject: 5, MaxBytes: -1},
	{Kind: KindKV, Name: BucketGroupContacts, MaxMsgsPerSubject: 5, MaxBytes: -1},
	{Kind: KindKV, Name: BucketServerSettings, MaxMsgsPerSubject: 1, MaxBytes: -1},
	{Kind: KindKV, Name: BucketNotificationsRead, MaxMsgsPerSubject: 1, MaxBytes: -1},
	{Kind: KindKV, Name: BucketSchedules, MaxMsgsPerSubject: 5, MaxBytes: -1},
	{Kind: KindKV, Name: BucketJobs, MaxMsgsPerSubject: 5, MaxBytes: -1},
	{Kind: KindKV, Name: BucketFleetConfig, MaxMsgsPerSubject: 1, MaxBytes: -1},
	{Kind: KindKV, Name: BucketJobsYAML, MaxMsgsPerSubject: 5, MaxBytes: -1},
	{Kind: KindKV, Name: BucketSchedulesYAML, MaxMsgsPerSubject: 5, MaxBytes: -1},
	{Kind: KindObject, Name: ObjectAgentReleases, MaxBytes: -1},
	{Kind: KindObject, Name: ObjectAppPackages, MaxBytes: -1},
	{Kind: KindObject, Name: ObjectScripts, MaxBytes: -1},
	{Kind: KindObject, Name: ObjectResultOutput, MaxAge: 30 * day, MaxBytes: gib},
	{Kind: KindObject, Name: ObjectCollections, MaxAge: 30 * day, MaxBytes: 5 * gib},
}

// SetupOptions select the profile and replica count of the resource list.
type SetupOptions struct {
	Profile  Profile
	Replicas int // 0 means 1
}

// Resources returns the expected resources for opts, in setup order.
func Resources(opts SetupOptions) []Resource {
	replicas := max(opts.Replicas, 1)
	out := make([]Resource, len(canonical))
	for i, r := range canonical {
		r.Subjects = slices.Clone(r.Subjects)
		if opts.Profile == ProfileDev && r.MaxBytes > 0 {
			r.MaxBytes /= DevDivisor
		}
		r.Replicas = replicas
		out[i] = r
	}
	return out
}

// FindResource looks a resource up by kind and name in the canonical list.
func FindResource(kind Kind, name string, opts SetupOptions) (Resource, bool) {
	for _, r := range Resources(opts) {
		if r.Kind == kind && r.Name == name {
			return r, true
		}
	}
	return Resource{}, false
}

func (r Resource) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              r.Name,
		Subjects:          r.Subjects,
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Discard:           jetstream.DiscardOld,
		MaxAge:            r.MaxAge,
		MaxBytes:          r.MaxBytes,
		MaxMsgsPerSubject: perSubject(r.MaxMsgsPerSubject),
		MaxConsumers:      maxConsumers(r.MaxConsumers),
		Replicas:          r.Replicas,
	}
}

// ExecMaxConsumers is EXEC's consumer limit: one replay consumer per agent,
// for fleets of up to that many PCs.
const ExecMaxConsumers = 100_000

// maxConsumers maps "not set" (0) to the server's "unlimited, default
// applies" (-1).
func maxConsumers(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

func (r Resource) kvConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:   r.Name,
		History:  uint8(r.MaxMsgsPerSubject),
		TTL:      r.MaxAge,
		MaxBytes: r.MaxBytes,
		Storage:  jetstream.FileStorage,
		Replicas: r.Replicas,
	}
}

func (r Resource) objectConfig() jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket:   r.Name,
		TTL:      r.MaxAge,
		MaxBytes: r.MaxBytes,
		Storage:  jetstream.FileStorage,
		Replicas: r.Replicas,
	}
}

func perSubject(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// Action is what setup does (or would do) to a resource.
type Action string

// Plan actions.
const (
	ActionCreate    Action = "create"
	ActionUpdate    Action = "update"
	ActionUnchanged Action = "unchanged"
	// ActionRecreate: the resource differs in a way the broker cannot update
	// in place; setup keeps it and warns, `jetstream delete` then setup fixes it.
	ActionRecreate Action = "recreate"
	// ActionUnknown: the broker did not answer for this resource.
	ActionUnknown Action = "unknown"
)

// FieldDiff is one field where the broker's resource differs from the expected one.
type FieldDiff struct {
	Field string `json:"field"`
	Have  string `json:"have"`
	Want  string `json:"want"`
	// Fixed is false when the broker cannot change the field in place.
	Fixed bool `json:"-"`
}

// ResourceState is the broker's view of one expected resource.
type ResourceState struct {
	Resource
	Exists   bool
	Action   Action
	Diff     []FieldDiff
	Messages uint64
	Bytes    uint64
	// Have is the broker's configuration of the backing stream when Exists
	// (zero otherwise), so status can report what the broker really holds.
	Have jetstream.StreamConfig
	// Err is set when the lookup failed for a reason other than "not found".
	Err error
}

// Plan compares every expected resource with the broker.
func Plan(ctx context.Context, js jetstream.JetStream, opts SetupOptions) []ResourceState {
	res := Resources(opts)
	out := make([]ResourceState, len(res))
	for i, r := range res {
		out[i] = planOne(ctx, js, r)
	}
	return out
}

func planOne(ctx context.Context, js jetstream.JetStream, r Resource) ResourceState {
	st := ResourceState{Resource: r}
	s, err := js.Stream(ctx, r.StreamName())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st.Action = ActionCreate
		return st
	}
	if err != nil {
		st.Action = ActionUnknown
		st.Err = fmt.Errorf("look up %s: %w", r, err)
		return st
	}
	info := s.CachedInfo()
	st.Exists = true
	st.Messages = info.State.Msgs
	st.Bytes = info.State.Bytes
	st.Have = info.Config
	st.Diff = diffConfig(r, info.Config)
	st.Action = ActionUnchanged
	for _, d := range st.Diff {
		if !d.Fixed {
			st.Action = ActionRecreate
			break
		}
		st.Action = ActionUpdate
	}
	return st
}

func diffConfig(r Resource, have jetstream.StreamConfig) []FieldDiff {
	var d []FieldDiff
	add := func(field, h, w string, fixed bool) {
		if h != w {
			d = append(d, FieldDiff{Field: field, Have: h, Want: w, Fixed: fixed})
		}
	}
	add("max_age", FormatDuration(have.MaxAge), FormatDuration(r.MaxAge), true)
	add("max_bytes", strconv.FormatInt(have.MaxBytes, 10), strconv.FormatInt(r.MaxBytes, 10), true)
	hr := max(have.Replicas, 1)
	add("replicas", strconv.Itoa(hr), strconv.Itoa(r.Replicas), true)
	add("storage", have.Storage.String(), jetstream.FileStorage.String(), false)
	switch r.Kind {
	case KindStream:
		add("subjects", fmt.Sprint(have.Subjects), fmt.Sprint(r.Subjects), true)
		add("max_msgs_per_subject", strconv.FormatInt(perSubject(have.MaxMsgsPerSubject), 10), strconv.FormatInt(perSubject(r.MaxMsgsPerSubject), 10), true)
		add("discard", have.Discard.String(), jetstream.DiscardOld.String(), true)
		if r.MaxConsumers > 0 {
			add("max_consumers", strconv.Itoa(have.MaxConsumers), strconv.Itoa(r.MaxConsumers), true)
		}
	case KindKV:
		add("history", strconv.FormatInt(have.MaxMsgsPerSubject, 10), strconv.FormatInt(r.MaxMsgsPerSubject, 10), true)
	}
	return d
}

// ErrInsufficientResources is returned when the broker cannot reserve a
// resource's max_bytes (JetStream error 10047).
var ErrInsufficientResources = errors.New("insufficient JetStream storage")

const jsErrInsufficientResources jetstream.ErrorCode = 10047

// SetupResult is what setup did to one resource.
type SetupResult struct {
	ResourceState
	// Done is the action taken: create, update, unchanged, or recreate when
	// an in-place update was refused and the resource was kept.
	Done    Action
	Warning string
	Err     error
}

// Setup creates or updates every expected resource. It goes on after a
// failure so one bad resource does not hide the state of the others, calls
// progress after each resource, and returns the first error.
func Setup(ctx context.Context, js jetstream.JetStream, opts SetupOptions, progress func(SetupResult)) ([]SetupResult, error) {
	var firstErr error
	var out []SetupResult
	for _, st := range Plan(ctx, js, opts) {
		res := applyOne(ctx, js, st)
		if res.Err != nil && firstErr == nil {
			firstErr = res.Err
		}
		if progress != nil {
			progress(res)
		}
		out = append(out, res)
	}
	return out, firstErr
}

func applyOne(ctx context.Context, js jetstream.JetStream, st ResourceState) SetupResult {
	res := SetupResult{ResourceState: st, Done: st.Action}
	r := st.Resource
	if st.Action == ActionUnchanged {
		return res
	}
	var err error
	switch r.Kind {
	case KindStream:
		err = retryTransient(ctx, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateStream(ctx, r.streamConfig())
			return err
		})
	case KindKV:
		err = retryTransient(ctx, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateKeyValue(ctx, r.kvConfig())
			return err
		})
	case KindObject:
		if !st.Exists || st.Action == ActionUnknown {
			err = retryTransient(ctx, func(ctx context.Context) error {
				_, err := js.CreateObjectStore(ctx, r.objectConfig())
				if errors.Is(err, jetstream.ErrBucketExists) {
					return nil
				}
				return err
			})
		} else {
			// An object store that exists with another config is updated where
			// the broker allows it and otherwise kept (SPEC §5).
			if _, uerr := js.UpdateObjectStore(ctx, r.objectConfig()); uerr != nil {
				res.Done = ActionRecreate
				res.Warning = fmt.Sprintf("%s exists with another config and the broker refused to update it (%v); kept as is", r, uerr)
				return res
			}
		}
	}
	if err != nil {
		if st.Action == ActionRecreate && !isInsufficientResources(err) {
			// The broker cannot change a field in place (storage, say):
			// keep the resource and say how to recreate it, rather than
			// fail setup on a resource that exists (SPEC §5).
			res.Done = ActionRecreate
			res.Warning = fmt.Sprintf("%s differs in a way the broker cannot change in place (%s) and was kept as is (%v); run `kanade jetstream delete %s %s --yes` and setup again to recreate it",
				r, unfixedFields(st.Diff), err, r.Kind, r.Name)
			return res
		}
		res.Err = setupError(r, st, err)
		return res
	}
	if st.Action == ActionUnknown {
		res.Done = ActionCreate
	}
	if st.Action == ActionRecreate {
		// CreateOrUpdate may still refuse the fields it cannot change; if it
		// did not, the resource is now reconciled.
		res.Done = ActionUpdate
	}
	return res
}

func isInsufficientResources(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrInsufficientResources
}

// unfixedFields names the fields of diff the broker cannot change in place.
func unfixedFields(diff []FieldDiff) string {
	var names []string
	for _, d := range diff {
		if !d.Fixed {
			names = append(names, fmt.Sprintf("%s %s, want %s", d.Field, d.Have, d.Want))
		}
	}
	return strings.Join(names, "; ")
}

func setupError(r Resource, st ResourceState, err error) error {
	verb := "create"
	if st.Exists {
		verb = "update"
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrInsufficientResources {
		return fmt.Errorf("%s %s: %w: the broker cannot reserve max_bytes=%d (%v); free disk, raise max_file_store, or run `kanade jetstream setup --profile dev` (byte caps / %d)",
			verb, r, ErrInsufficientResources, r.MaxBytes, apiErr, DevDivisor)
	}
	return fmt.Errorf("%s %s: %w", verb, r, err)
}

// ErrResourceNotFound is returned by DeleteResource when there is nothing to delete.
var ErrResourceNotFound = errors.New("resource not found")

// DeleteResource deletes one stream, KV bucket or object store.
func DeleteResource(ctx context.Context, js jetstream.JetStream, kind Kind, name string) error {
	var err error
	switch kind {
	case KindStream:
		err = js.DeleteStream(ctx, name)
	case KindKV:
		err = js.DeleteKeyValue(ctx, name)
	case KindObject:
		err = js.DeleteObjectStore(ctx, name)
	default:
		return fmt.Errorf("unknown resource kind %q", kind)
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("delete %s %q: %w", kind, name, ErrResourceNotFound)
	}
	if err != nil {
		return fmt.Errorf("delete %s %q: %w", kind, name, err)
	}
	return nil
}

// Transient cluster failures during setup: right after a cluster forms, or
// while a peer is briefly unreachable, a create can be refused for placement
// (10005) or go unanswered while stream leadership settles. Every create
// here is idempotent, so it is tried again a few times before setup fails.
const (
	setupAttempts                           = 4
	setupAttemptTimeout                     = 10 * time.Second
	jsErrNoPlacement    jetstream.ErrorCode = 10005
)

func retryTransient(ctx context.Context, op func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, setupAttemptTimeout)
		err := op(actx)
		cancel()
		if err == nil || attempt == setupAttempts || ctx.Err() != nil || !transientSetupError(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt) * 250 * time.Millisecond):
		}
	}
}

func transientSetupError(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jsErrNoPlacement
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
}
