package core_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
	day = 24 * time.Hour
)

// The resource list of SPEC §5 with SPEC-2 §1's additions (NOTIFICATIONS,
// five KV buckets, object store collections, history 1 for agent_config and
// agent_groups), written out here independently of resources.go so the test
// compares the code with the contract, not with itself.
var specStreams = []struct {
	name     string
	subjects []string
	maxAge   time.Duration
	maxBytes int64
	perSubj  int64
}{
	{"INVENTORY", []string{"inventory.>"}, 90 * day, gib, -1},
	{"RESULTS", []string{"results.>"}, 30 * day, 2 * gib, -1},
	{"EXEC", []string{"commands.>"}, 7 * day, 64 * mib, 1},
	{"EVENTS", []string{"events.>"}, 7 * day, 256 * mib, -1},
	{"AUDIT", []string{"audit.>"}, 90 * day, 512 * mib, -1},
	{"OBS_EVENTS", []string{"obs.>"}, 90 * day, 512 * mib, -1},
	{"NOTIFICATIONS", []string{"notifications.>"}, 90 * day, 512 * mib, -1},
}

var specKV = map[string]int64{
	"script_current": 5, "script_status": 5, "agents_state": 1, "agent_config": 1, "agent_groups": 1,
	"agent_groups_derived": 1, "agent_meta": 5, "group_contacts": 5, "server_settings": 1, "notifications_read": 1,
	"schedules": 5, "jobs": 5, "fleet_config": 1, "jobs_yaml": 5, "schedules_yaml": 5,
}

var specObjects = []struct {
	name     string
	maxAge   time.Duration
	maxBytes int64
}{
	{"agent_releases", 0, -1}, {"app_packages", 0, -1}, {"scripts", 0, -1}, {"result_output", 30 * day, gib},
	{"collections", 30 * day, 5 * gib},
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(ctxT(t), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().Config
}

// checkBroker compares every resource on the broker with SPEC §5, byte caps
// divided by div.
func checkBroker(t *testing.T, js jetstream.JetStream, div int64) {
	t.Helper()
	for _, w := range specStreams {
		c := streamConfig(t, js, w.name)
		if !slices.Equal(c.Subjects, w.subjects) || c.MaxAge != w.maxAge || c.MaxBytes != w.maxBytes/div ||
			c.MaxMsgsPerSubject != w.perSubj || c.Storage != jetstream.FileStorage || c.Discard != jetstream.DiscardOld ||
			c.Retention != jetstream.LimitsPolicy || c.Replicas != 1 {
			t.Errorf("stream %s: subjects %v max_age %v max_bytes %d per_subject %d storage %v discard %v retention %v replicas %d",
				w.name, c.Subjects, c.MaxAge, c.MaxBytes, c.MaxMsgsPerSubject, c.Storage, c.Discard, c.Retention, c.Replicas)
		}
	}
	for name, history := range specKV {
		kv, err := js.KeyValue(ctxT(t), name)
		if err != nil {
			t.Errorf("kv %s: %v", name, err)
			continue
		}
		st, err := kv.Status(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		c := streamConfig(t, js, "KV_"+name)
		if st.History() != history || c.Storage != jetstream.FileStorage || c.MaxAge != 0 || c.MaxBytes != -1 {
			t.Errorf("kv %s: history %d (want %d) storage %v ttl %v max_bytes %d", name, st.History(), history, c.Storage, c.MaxAge, c.MaxBytes)
		}
	}
	for _, w := range specObjects {
		if _, err := js.ObjectStore(ctxT(t), w.name); err != nil {
			t.Errorf("object store %s: %v", w.name, err)
			continue
		}
		c := streamConfig(t, js, "OBJ_"+w.name)
		want := w.maxBytes
		if want > 0 {
			want /= div
		}
		if c.MaxAge != w.maxAge || c.MaxBytes != want || c.Storage != jetstream.FileStorage {
			t.Errorf("object store %s: max_age %v (want %v) max_bytes %d (want %d) storage %v", w.name, c.MaxAge, w.maxAge, c.MaxBytes, want, c.Storage)
		}
	}
}

func setup(t *testing.T, js jetstream.JetStream, opts core.SetupOptions) []core.SetupResult {
	t.Helper()
	var progress []string
	res, err := core.Setup(ctxT(t), js, opts, func(r core.SetupResult) { progress = append(progress, r.Name) })
	if err != nil {
		t.Fatalf("setup %+v: %v", opts, err)
	}
	if len(progress) != len(res) || len(res) != 27 {
		t.Fatalf("setup reported %d progress calls for %d results, want 27", len(progress), len(res))
	}
	return res
}

func doneActions(res []core.SetupResult) map[string]core.Action {
	m := map[string]core.Action{}
	for _, r := range res {
		m[string(r.Kind)+" "+r.Name] = r.Done
	}
	return m
}

func TestResourceList(t *testing.T) {
	prod := core.Resources(core.SetupOptions{})
	var names []string
	for _, r := range prod {
		names = append(names, string(r.Kind)+" "+r.Name)
		if r.Replicas != 1 {
			t.Errorf("%s replicas %d, want 1 by default", r, r.Replicas)
		}
	}
	var want []string
	for _, s := range specStreams {
		want = append(want, "stream "+s.name)
	}
	for _, n := range []string{"script_current", "script_status", "agents_state", "agent_config", "agent_groups",
		"agent_groups_derived", "agent_meta", "group_contacts", "server_settings", "notifications_read",
		"schedules", "jobs", "fleet_config", "jobs_yaml", "schedules_yaml"} {
		want = append(want, "kv "+n)
	}
	for _, o := range specObjects {
		want = append(want, "object "+o.name)
	}
	if !slices.Equal(names, want) {
		t.Fatalf("resources = %q\nwant %q", names, want)
	}

	dev := core.Resources(core.SetupOptions{Profile: core.ProfileDev, Replicas: 3})
	var prodBytes, devBytes int64
	for i, r := range dev {
		p := prod[i]
		if r.Name != p.Name || !slices.Equal(r.Subjects, p.Subjects) || r.MaxAge != p.MaxAge || r.MaxMsgsPerSubject != p.MaxMsgsPerSubject {
			t.Errorf("dev profile changed more than byte caps: %+v vs %+v", r, p)
		}
		if p.MaxBytes > 0 {
			if r.MaxBytes != p.MaxBytes/64 {
				t.Errorf("%s dev max_bytes %d, want %d", r, r.MaxBytes, p.MaxBytes/64)
			}
			prodBytes += p.MaxBytes
			devBytes += r.MaxBytes
		} else if r.MaxBytes != p.MaxBytes {
			t.Errorf("%s unlimited became %d", r, r.MaxBytes)
		}
		if r.Replicas != 3 {
			t.Errorf("%s replicas %d, want 3", r, r.Replicas)
		}
	}
	// SPEC §5's 5.3 GiB plus SPEC-2 §1's NOTIFICATIONS (512 MiB) and
	// collections (5 GiB): about 10.8 GiB reserved in production.
	if g := float64(prodBytes) / float64(gib); g < 10.7 || g > 10.9 {
		t.Errorf("production reserves %.2f GiB, want about 10.8", g)
	}
	t.Logf("reserved max_bytes: production %.2f GiB, dev %.1f MiB", float64(prodBytes)/float64(gib), float64(devBytes)/float64(mib))

	// Resources hands out copies: editing one does not touch the list.
	prod[0].Subjects[0] = "changed.>"
	if core.Resources(core.SetupOptions{})[0].Subjects[0] != "inventory.>" {
		t.Fatal("Resources shares its subject slices")
	}

	r, ok := core.FindResource(core.KindObject, core.ObjectResultOutput, core.SetupOptions{Profile: core.ProfileDev})
	if !ok || r.MaxBytes != gib/64 || r.StreamName() != "OBJ_result_output" || r.String() != `object "result_output"` {
		t.Errorf("FindResource(result_output) = %+v, %v", r, ok)
	}
	if r, ok := core.FindResource(core.KindKV, core.BucketAgentConfig, core.SetupOptions{}); !ok || r.StreamName() != "KV_agent_config" {
		t.Errorf("FindResource(agent_config) = %+v, %v", r, ok)
	}
	if _, ok := core.FindResource(core.KindStream, core.BucketAgentConfig, core.SetupOptions{}); ok {
		t.Error("found a kv bucket as a stream")
	}
}

func TestParseKindAndProfile(t *testing.T) {
	for in, want := range map[string]core.Kind{"stream": core.KindStream, "streams": core.KindStream, "kv": core.KindKV,
		"bucket": core.KindKV, "object": core.KindObject, "obj": core.KindObject, "object-store": core.KindObject} {
		if got, err := core.ParseKind(in); err != nil || got != want {
			t.Errorf("ParseKind(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := core.ParseKind("queue"); err == nil || !strings.Contains(err.Error(), "stream, kv or object") {
		t.Errorf("ParseKind(queue) err = %v", err)
	}
	for in, want := range map[string]core.Profile{"": core.ProfileProduction, "production": core.ProfileProduction, "dev": core.ProfileDev} {
		if got, err := core.ParseProfile(in); err != nil || got != want {
			t.Errorf("ParseProfile(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := core.ParseProfile("prod"); err == nil {
		t.Error("ParseProfile(prod) accepted")
	}
}

func TestSetupCreatesEveryResourceIdempotently(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.JetStream(t, srv.URL())

	for _, st := range core.Plan(ctxT(t), js, core.SetupOptions{}) {
		if st.Action != core.ActionCreate || st.Exists || st.Err != nil {
			t.Errorf("empty broker: plan for %s = %s (exists %v, err %v)", st.Resource, st.Action, st.Exists, st.Err)
		}
	}
	start := time.Now()
	for name, a := range doneActions(setup(t, js, core.SetupOptions{Profile: core.ProfileProduction})) {
		if a != core.ActionCreate {
			t.Errorf("first setup: %s %s, want create", name, a)
		}
	}
	t.Logf("production setup of 20 resources took %v", time.Since(start).Round(time.Millisecond))
	checkBroker(t, js, 1)

	for _, r := range setup(t, js, core.SetupOptions{}) {
		if r.Done != core.ActionUnchanged || len(r.Diff) != 0 || r.Warning != "" {
			t.Errorf("second setup: %s %s diff %v warning %q, want unchanged", r.Resource, r.Done, r.Diff, r.Warning)
		}
	}
	for _, st := range core.Plan(ctxT(t), js, core.SetupOptions{}) {
		if st.Action != core.ActionUnchanged || !st.Exists {
			t.Errorf("plan after setup: %s %s", st.Resource, st.Action)
		}
	}
	// A message shows in the plan's counters.
	if _, err := js.Publish(ctxT(t), core.SubjectResults("r-1"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	for _, st := range core.Plan(ctxT(t), js, core.SetupOptions{}) {
		if st.Name == core.StreamResults && (st.Messages != 1 || st.Bytes == 0) {
			t.Errorf("RESULTS messages %d bytes %d", st.Messages, st.Bytes)
		}
	}

	// Switching profile is an update of the byte caps only.
	for _, r := range setup(t, js, core.SetupOptions{Profile: core.ProfileDev}) {
		want := core.ActionUnchanged
		if r.MaxBytes > 0 {
			want = core.ActionUpdate
			if len(r.Diff) != 1 || r.Diff[0].Field != "max_bytes" {
				t.Errorf("%s: diff %v, want max_bytes only", r.Resource, r.Diff)
			}
		}
		if r.Done != want {
			t.Errorf("production → dev: %s %s, want %s", r.Resource, r.Done, want)
		}
	}
	checkBroker(t, js, 64)
}

func TestSetupDevProfileAndReplicas(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.JetStream(t, srv.URL())
	setup(t, js, core.SetupOptions{Profile: core.ProfileDev, Replicas: 1})
	checkBroker(t, js, 64)
	if c := streamConfig(t, js, "RESULTS"); c.MaxBytes != 32*mib {
		t.Errorf("dev RESULTS max_bytes %d, want 32 MiB", c.MaxBytes)
	}

	// R3 on a single node: the replica count reaches the broker, which refuses it.
	res, err := core.Setup(ctxT(t), js, core.SetupOptions{Profile: core.ProfileDev, Replicas: 3}, nil)
	if err == nil {
		t.Fatal("setup with 3 replicas succeeded on a single node")
	}
	if !strings.Contains(err.Error(), "INVENTORY") {
		t.Errorf("error does not name the first resource: %v", err)
	}
	for _, r := range res {
		if r.Replicas != 3 || len(r.Diff) == 0 || r.Diff[0].Field != "replicas" || r.Diff[0].Have != "1" || r.Diff[0].Want != "3" {
			t.Errorf("%s: replicas %d diff %v", r.Resource, r.Replicas, r.Diff)
			break
		}
	}
	t.Logf("replicas 3 on one node: %v", err)
}

func TestSetupReconcilesDrift(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.JetStream(t, srv.URL())
	setup(t, js, core.SetupOptions{Profile: core.ProfileDev})

	// Someone shortens RESULTS behind setup's back.
	cfg := streamConfig(t, js, core.StreamResults)
	cfg.MaxAge = 24 * time.Hour
	if _, err := js.UpdateStream(ctxT(t), cfg); err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, st := range core.Plan(ctxT(t), js, core.SetupOptions{Profile: core.ProfileDev}) {
		if st.Name != core.StreamResults {
			if st.Action != core.ActionUnchanged {
				t.Errorf("%s: %s %v", st.Resource, st.Action, st.Diff)
			}
			continue
		}
		found = true
		want := []core.FieldDiff{{Field: "max_age", Have: "24h", Want: "720h", Fixed: true}}
		if st.Action != core.ActionUpdate || !slices.Equal(st.Diff, want) {
			t.Errorf("plan RESULTS: %s %+v, want update %+v", st.Action, st.Diff, want)
		}
	}
	if !found {
		t.Fatal("RESULTS missing from the plan")
	}
	acts := doneActions(setup(t, js, core.SetupOptions{Profile: core.ProfileDev}))
	if acts["stream RESULTS"] != core.ActionUpdate {
		t.Errorf("setup RESULTS: %s, want update", acts["stream RESULTS"])
	}
	if got := streamConfig(t, js, core.StreamResults).MaxAge; got != 30*day {
		t.Errorf("RESULTS max_age %v after setup, want 720h", got)
	}
	for _, st := range core.Plan(ctxT(t), js, core.SetupOptions{Profile: core.ProfileDev}) {
		if st.Action != core.ActionUnchanged {
			t.Errorf("after reconcile: %s %s %v", st.Resource, st.Action, st.Diff)
		}
	}

	// A KV bucket whose history was changed is reconciled too.
	kcfg := streamConfig(t, js, "KV_"+core.BucketAgentConfig)
	kcfg.MaxMsgsPerSubject = 5
	if _, err := js.UpdateStream(ctxT(t), kcfg); err != nil {
		t.Fatal(err)
	}
	for _, st := range core.Plan(ctxT(t), js, core.SetupOptions{Profile: core.ProfileDev}) {
		if st.Name == core.BucketAgentConfig && (st.Action != core.ActionUpdate || len(st.Diff) != 1 || st.Diff[0].Field != "history") {
			t.Errorf("kv drift: %s %+v", st.Action, st.Diff)
		}
	}
	setup(t, js, core.SetupOptions{Profile: core.ProfileDev})
	checkBroker(t, js, 64)
}

func TestSetupKeepsForeignResources(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.JetStream(t, srv.URL())
	// result_output made beforehand by someone else with other limits.
	if _, err := js.CreateObjectStore(ctxT(t), jetstream.ObjectStoreConfig{Bucket: core.ObjectResultOutput, MaxBytes: 10 * mib}); err != nil {
		t.Fatal(err)
	}
	// RESULTS made on memory: a field no broker changes in place.
	if _, err := js.CreateStream(ctxT(t), jetstream.StreamConfig{Name: core.StreamResults, Subjects: []string{"results.>"},
		Storage: jetstream.MemoryStorage, MaxBytes: mib}); err != nil {
		t.Fatal(err)
	}
	for _, st := range core.Plan(ctxT(t), js, core.SetupOptions{}) {
		switch st.Name {
		case core.StreamResults:
			if st.Action != core.ActionRecreate {
				t.Errorf("memory RESULTS planned %s %v, want recreate", st.Action, st.Diff)
			}
		case core.ObjectResultOutput:
			if st.Action != core.ActionUpdate {
				t.Errorf("result_output planned %s %v, want update", st.Action, st.Diff)
			}
		}
	}
	res, err := core.Setup(ctxT(t), js, core.SetupOptions{}, nil)
	if err != nil {
		t.Fatalf("setup failed because resources already existed: %v", err)
	}
	for _, r := range res {
		switch r.Name {
		case core.ObjectResultOutput:
			c := streamConfig(t, js, "OBJ_result_output")
			switch {
			case r.Done == core.ActionUpdate && r.Warning == "":
				if c.MaxBytes != gib || c.MaxAge != 30*day {
					t.Errorf("result_output updated to max_bytes %d max_age %v", c.MaxBytes, c.MaxAge)
				}
			case r.Warning != "":
				t.Logf("result_output kept with a warning: %s", r.Warning)
			default:
				t.Errorf("result_output: %s without a warning", r.Done)
			}
		case core.StreamResults:
			if r.Done != core.ActionRecreate || !strings.Contains(r.Warning, "storage") || !strings.Contains(r.Warning, "kanade jetstream delete stream RESULTS") {
				t.Errorf("memory RESULTS: done %s warning %q", r.Done, r.Warning)
			}
			if c := streamConfig(t, js, core.StreamResults); c.Storage != jetstream.MemoryStorage {
				t.Errorf("RESULTS storage changed to %v", c.Storage)
			}
		default:
			if r.Done != core.ActionCreate || r.Warning != "" || r.Err != nil {
				t.Errorf("%s: %s %q %v", r.Resource, r.Done, r.Warning, r.Err)
			}
		}
	}
	// Delete and setup fixes the kept stream, as the warning says.
	if err := core.DeleteResource(ctxT(t), js, core.KindStream, core.StreamResults); err != nil {
		t.Fatal(err)
	}
	setup(t, js, core.SetupOptions{})
	checkBroker(t, js, 1)
}

func TestSetupInsufficientStorage(t *testing.T) {
	srv := natstest.Run(t, natstest.WithMaxStore(gib))
	_, js := natstest.JetStream(t, srv.URL())
	res, err := core.Setup(ctxT(t), js, core.SetupOptions{Profile: core.ProfileProduction}, nil)
	if err == nil {
		t.Fatal("production setup fit in a 1 GiB store")
	}
	if !errors.Is(err, core.ErrInsufficientResources) {
		t.Fatalf("err = %v, want ErrInsufficientResources", err)
	}
	var first *core.SetupResult
	for i := range res {
		if res[i].Err != nil {
			first = &res[i]
			break
		}
	}
	if first == nil {
		t.Fatal("setup failed but no resource carries the error")
	}
	for _, want := range []string{first.Resource.String(), "--profile dev", "max_bytes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	t.Logf("production on a 1 GiB store: %v", err)

	// Every resource that fits was still made: one refusal hides nothing.
	for _, r := range res {
		if r.Err == nil && r.Done != core.ActionCreate {
			t.Errorf("%s: %s", r.Resource, r.Done)
		}
		if r.Err != nil && !errors.Is(r.Err, core.ErrInsufficientResources) {
			t.Errorf("%s failed for another reason: %v", r.Resource, r.Err)
		}
	}

	// The suggested fix works on the same broker.
	setup(t, js, core.SetupOptions{Profile: core.ProfileDev})
	checkBroker(t, js, 64)
}

func TestDeleteResource(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.JetStream(t, srv.URL())
	setup(t, js, core.SetupOptions{Profile: core.ProfileDev})
	for _, tc := range []struct {
		kind core.Kind
		name string
	}{
		{core.KindStream, core.StreamEvents},
		{core.KindKV, core.BucketJobs},
		{core.KindObject, core.ObjectScripts},
	} {
		if err := core.DeleteResource(ctxT(t), js, tc.kind, tc.name); err != nil {
			t.Fatalf("delete %s %s: %v", tc.kind, tc.name, err)
		}
		err := core.DeleteResource(ctxT(t), js, tc.kind, tc.name)
		if !errors.Is(err, core.ErrResourceNotFound) || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("second delete of %s %s: %v, want ErrResourceNotFound naming it", tc.kind, tc.name, err)
		}
	}
	for _, st := range core.Plan(ctxT(t), js, core.SetupOptions{Profile: core.ProfileDev}) {
		deleted := st.Name == core.StreamEvents || st.Name == core.BucketJobs || st.Name == core.ObjectScripts
		if deleted != (st.Action == core.ActionCreate) {
			t.Errorf("after delete: %s %s", st.Resource, st.Action)
		}
	}
	for _, kind := range []core.Kind{core.KindStream, core.KindKV, core.KindObject} {
		if err := core.DeleteResource(ctxT(t), js, kind, "never_made"); !errors.Is(err, core.ErrResourceNotFound) {
			t.Errorf("delete missing %s: %v", kind, err)
		}
	}
	if err := core.DeleteResource(ctxT(t), js, core.Kind("queue"), "x"); err == nil || errors.Is(err, core.ErrResourceNotFound) {
		t.Errorf("unknown kind: %v", err)
	}
	// KV and object deletes do not touch the stream of the same name.
	if err := core.DeleteResource(ctxT(t), js, core.KindKV, core.StreamResults); !errors.Is(err, core.ErrResourceNotFound) {
		t.Errorf("kv RESULTS: %v", err)
	}
	if _, err := js.Stream(ctxT(t), core.StreamResults); err != nil {
		t.Errorf("RESULTS gone after deleting kv RESULTS: %v", err)
	}
}

// Issue 11: every agent holds one replay consumer on EXEC, and nats-server
// allows 1,000 consumers per stream unless the stream says otherwise, so a
// stock broker stopped a fleet at 1,000 PCs. Setup sets EXEC's limit, and
// updates an EXEC made without it.
func TestSetupLiftsExecConsumerLimit(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.JetStream(t, srv.URL())
	// An EXEC made by an older setup, without the limit.
	old := jetstream.StreamConfig{Name: core.StreamExec, Subjects: []string{core.SubjectCommandsWildcard},
		MaxAge: 7 * 24 * time.Hour, MaxBytes: 64 << 20, MaxMsgsPerSubject: 1, Storage: jetstream.FileStorage}
	if _, err := js.CreateStream(ctxT(t), old); err != nil {
		t.Fatal(err)
	}
	for _, r := range setup(t, js, core.SetupOptions{Profile: core.ProfileProduction}) {
		if r.Name == core.StreamExec && (r.Done != core.ActionUpdate || len(r.Diff) != 1 || r.Diff[0].Field != "max_consumers") {
			t.Errorf("EXEC without a consumer limit: %s diff %v, want an update of max_consumers", r.Done, r.Diff)
		}
	}
	const n = 1005
	for i := range n {
		_, err := js.CreateOrUpdateConsumer(ctxT(t), core.StreamExec, jetstream.ConsumerConfig{
			Durable: fmt.Sprintf("agent_replay_pc-%04d", i), AckPolicy: jetstream.AckExplicitPolicy,
			DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy, FilterSubjects: []string{core.SubjectCommandsAll},
		})
		if err != nil {
			t.Fatalf("replay consumer %d of %d: %v", i+1, n, err)
		}
	}
}
