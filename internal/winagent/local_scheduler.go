package winagent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/jobs"
	"github.com/kanadehq/kanade-go/internal/schedule"
)

// The local scheduler (subsystem "schedules", SPEC-2 §4) fires the
// `runs_on: agent` schedules that are enabled and target this pc (all, its
// pc id, or any of its groups, derived groups included), from its own copy
// of the buckets it needs, so it keeps firing while the broker is down and
// after a restart without a broker. Each fire is a Command built from the
// cached job and run through the executor (local_fire.go); results wait in
// the outbox like every other.
//
// # The cache
//
// <data_dir>/local_schedules.json holds the agent schedules, the jobs they
// name, those jobs' script_status rows (revoke), fleet_config/freeze and
// this pc's groups, as last read from the broker. A full re-read happens at
// start, at every reconnect (so what changed while the agent was away
// applies then), when the buckets are re-created and when membership
// changes; it builds a fresh copy and replaces the good one only when every
// read succeeded, so a partial re-read never empties the cache. Changes of
// schedules, of the needed jobs, of their revoke rows and of the freeze
// apply as they arrive (a backend schedule's change costs nothing; a newly
// needed job is read then). The reads are direct gets (kvlist.go,
// kvfollow.go): no consumer per agent.
//
// # Firing
//
// At start the first look waits for the first read from the broker (not
// when it cannot be reached: startOfflineGrace), so a freeze or an edit
// made while the agent was down applies before the copy on disk fires. The
// loop wakes at the next calendar tick, when something changes, when a
// fire finishes and, while a per_pc schedule is due but held back by a
// gate, once a minute; it never sleeps longer than a minute while it has
// schedules, so a suspended PC notices the time soon after it wakes. Each
// schedule that is due passes the gates in this order: the freeze, the
// active window, constraints.window and skip_dates, its job present in the
// cache (missing: a WARN and the tick is skipped, never an empty run), then
// the completion dedup (per_pc: the last success in local_completions.json,
// older than every; nothing in flight). A job revoked in script_status is
// not fired either. The fire's deadline_at is the tick + starting_deadline.
//
// Calendar ticks are never backfilled: a tick missed while the agent was
// not running is gone (as upstream, whose cron starts afresh at boot), and a
// loop that wakes late (a suspended PC) fires the latest missed tick once.
// A per_pc fire that fails (exit ≠ 0) is retried after 1 m, 2 m, 4 m, … up
// to an hour, not every minute. `on: startup` fires once per OS boot
// (local_boot.go), checked when the cache loads; with starting_deadline only
// if the agent came up within it after the boot.

// localCacheFile is the scheduler's copy of the buckets in the data dir.
const localCacheFile = "local_schedules.json"

// Loop bounds.
const (
	// schedulerMaxSleep is the longest the loop sleeps while it has
	// schedules, and the re-check period of a due but gated per_pc.
	schedulerMaxSleep = time.Minute
	// failBackoffMax caps the wait before a failed per_pc fire is retried.
	failBackoffMax = time.Hour
	// reloadBackoffMax caps the wait between failed re-reads.
	reloadBackoffMax = 30 * time.Second
	// At start the first look waits for the first read from the broker,
	// so a freeze or an edit made while the agent was down applies before
	// anything fires from the copy on disk: at most startReadWait, and
	// only startOfflineGrace when the broker cannot be reached.
	startOfflineGrace = 5 * time.Second
	startReadWait     = 30 * time.Second
)

// localCache is the scheduler's copy of the buckets, as stored on disk.
type localCache struct {
	SavedAt time.Time `json:"saved_at"`
	// Groups is this pc's membership (both rows) at the last read.
	Groups []string `json:"groups"`
	// Schedules are every runs_on: agent schedule, whatever its target
	// (membership can change offline-first: the cache keeps them all).
	Schedules map[string]json.RawMessage `json:"schedules"`
	// Jobs are the jobs the schedules that target this pc name.
	Jobs map[string]cachedJob `json:"jobs"`
	// ScriptStatus holds the script_status rows of those jobs.
	ScriptStatus map[string]string `json:"script_status"`
	// Freeze is fleet_config/freeze; nil when the key is absent.
	Freeze *cachedFreeze `json:"freeze,omitempty"`
}

type cachedJob struct {
	Job json.RawMessage `json:"job"`
	// ScriptSHA256 is the digest of the job's script_object, resolved
	// while connected (a local fire must not need the broker).
	ScriptSHA256 string `json:"script_sha256,omitempty"`
}

type cachedFreeze struct {
	// Value is the raw value: one that does not decode still freezes.
	Value string `json:"value"`
}

func newLocalCache() *localCache {
	return &localCache{Groups: []string{}, Schedules: map[string]json.RawMessage{}, Jobs: map[string]cachedJob{}, ScriptStatus: map[string]string{}}
}

func (c *localCache) freezeState() schedule.FreezeState {
	if c.Freeze == nil {
		return schedule.FreezeState{}
	}
	return schedule.FreezeStateOf(true, []byte(c.Freeze.Value))
}

// localScheduler is the subsystem.
type localScheduler struct {
	// enforcing reports whether this agent refuses unsigned commands
	// (keyring.go); its agent-side fires are then held (enforcingHold).
	enforcing func() bool

	pc      string
	nc      *nats.Conn
	tracker *core.Tracker
	clock   core.Clock
	rand    func() float64
	log     *slog.Logger
	dataDir string
	// groups is the live membership: when it changes, the scheduler reads
	// this pc's group rows itself, so the cache (and an offline restart)
	// targets by what the broker holds.
	groups *watchable[[]string]
	// membershipRead is set once a re-read has read both group rows
	// itself (the first after start); later re-reads take groups.
	membershipRead bool
	fires          *localFires
	// fire hands a built command to the executor (executor.fireLocal).
	fire func(*core.Command, localOrigin) error
	// prefetch resolves a script_object's digest and caches its bytes for
	// offline fires; nil skips script_object jobs' digests (tests).
	prefetch func(ctx context.Context, key string) (sha256 string, err error)
	// local is the zone `tz: local` means (time.Local in the agent).
	local *time.Location
	// boot reads the OS boot (currentBoot).
	boot func() (bootIdentity, error)

	mu      sync.Mutex
	cache   *localCache
	decoded map[string]*schedule.Schedule
	// wake is signalled when the cache changes.
	wake chan struct{}
	// seen is each schedule's raw value when the loop last saw it: a
	// changed schedule starts afresh (cursor, backoff, logs).
	seen map[string]string
	// cursor is the instant up to which a calendar schedule's ticks are
	// done.
	cursor map[string]time.Time
	// said is the last hold-back reason logged per schedule, so a per_pc
	// held back every minute logs once per reason.
	said map[string]string
	// startupDone lists the startup schedules judged in this process.
	startupDone map[string]bool
	bootID      *bootIdentity
	markers     map[string]json.RawMessage
	// jobSubs and statusSubs follow the needed jobs' keys.
	jobSubs, statusSubs map[string]*nats.Subscription
	// firstRead is closed by the first successful read from the broker;
	// nil: the fire loop does not wait for it (tests).
	firstRead     chan struct{}
	firstReadOnce sync.Once
}

var _ subsystem = (*localScheduler)(nil)

func (s *localScheduler) Name() string { return "schedules" }

// Run loads the cache from disk, then follows the buckets and fires due
// schedules until ctx ends. The two loops end together: a panic in either
// stops both, and the supervisor restarts the subsystem.
func (s *localScheduler) Run(ctx context.Context) error {
	s.init()
	s.firstRead, s.firstReadOnce = make(chan struct{}), sync.Once{}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	var panicked atomic.Value
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel()
		defer func() {
			if r := recover(); r != nil {
				panicked.Store(fmt.Sprint(r))
			}
		}()
		s.followLoop(ctx)
	}()
	s.fireLoop(ctx)
	cancel()
	wg.Wait()
	if p := panicked.Load(); p != nil {
		return fmt.Errorf("following the schedule buckets panicked: %v", p)
	}
	return nil
}

func (s *localScheduler) init() {
	if s.local == nil {
		s.local = time.Local
	}
	if s.boot == nil {
		s.boot = currentBoot
	}
	s.wake = make(chan struct{}, 1)
	s.seen, s.cursor, s.said, s.startupDone = map[string]string{}, map[string]time.Time{}, map[string]string{}, map[string]bool{}
	s.jobSubs, s.statusSubs = map[string]*nats.Subscription{}, map[string]*nats.Subscription{}
	s.cache = newLocalCache()
	s.decoded = map[string]*schedule.Schedule{}
	path := filepath.Join(s.dataDir, localCacheFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		s.log.Info("no cached schedules yet; waiting for the broker")
	case err != nil:
		s.log.Warn("cannot read the cached schedules; waiting for the broker", "path", path, "error", err)
	default:
		c := newLocalCache()
		if err := json.Unmarshal(b, c); err != nil {
			s.log.Warn("cached schedules do not decode; waiting for the broker", "path", path, "error", err)
			break
		}
		c.normalize()
		s.setCache(c, false)
		s.log.Info("loaded cached schedules", "schedules", len(c.Schedules), "jobs", len(c.Jobs), "saved_at", c.SavedAt.Format(time.RFC3339))
	}
	s.markers = map[string]json.RawMessage{}
	if b, err := os.ReadFile(filepath.Join(s.dataDir, startupMarkersFile)); err == nil {
		if err := json.Unmarshal(b, &s.markers); err != nil {
			s.markers = map[string]json.RawMessage{}
			s.log.Warn("startup markers do not decode; on: startup schedules may fire again this boot", "error", err)
		}
		if s.markers == nil { // the file held null
			s.markers = map[string]json.RawMessage{}
		}
	}
}

func (c *localCache) normalize() {
	if c.Groups == nil {
		c.Groups = []string{}
	}
	if c.Schedules == nil {
		c.Schedules = map[string]json.RawMessage{}
	}
	if c.Jobs == nil {
		c.Jobs = map[string]cachedJob{}
	}
	if c.ScriptStatus == nil {
		c.ScriptStatus = map[string]string{}
	}
}

// setCache makes c the cache (decoding its schedules), saves it when save
// is set, and wakes the fire loop.
func (s *localScheduler) setCache(c *localCache, save bool) {
	decoded := map[string]*schedule.Schedule{}
	for id, raw := range c.Schedules {
		sch, err := schedule.Decode(raw)
		if err != nil {
			s.log.Warn("cached schedule does not decode; it is skipped", "schedule", id, "error", err)
			continue
		}
		decoded[id] = sch
	}
	s.mu.Lock()
	s.cache, s.decoded = c, decoded
	s.mu.Unlock()
	if save {
		s.save(c)
	}
	s.poke()
}

func (s *localScheduler) save(c *localCache) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err == nil {
		err = writeFileAtomic(filepath.Join(s.dataDir, localCacheFile), b)
	}
	if err != nil {
		s.log.Warn("could not save the schedules cache; a restart without the broker would use an older copy", "error", err)
	}
}

func (s *localScheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// mine reports whether sch is one this agent fires.
func (s *localScheduler) mine(sch *schedule.Schedule, groups []string) bool {
	return sch.IsAgent() && sch.Enabled && sch.Targets(s.pc, groups)
}

// ---- following the buckets ----

// followLoop keeps the cache in step with the broker.
func (s *localScheduler) followLoop(ctx context.Context) {
	changes := make(chan *nats.Msg, kvFollowBuffer)
	var fixed []*nats.Subscription
	defer func() {
		for _, sub := range fixed {
			_ = sub.Unsubscribe()
		}
		for _, m := range []map[string]*nats.Subscription{s.jobSubs, s.statusSubs} {
			for k, sub := range m {
				_ = sub.Unsubscribe()
				delete(m, k)
			}
		}
	}()
	subjects := []string{
		core.SubjectKVKey(core.BucketSchedules, ">"),
		core.SubjectKVKey(core.BucketFleetConfig, core.KeyFreeze),
	}
	for _, b := range []string{core.BucketSchedules, core.BucketJobs, core.BucketScriptStatus, core.BucketFleetConfig} {
		subjects = append(subjects, core.SubjectStreamCreatedAdvisory(core.KVStream(b)), core.SubjectStreamDeletedAdvisory(core.KVStream(b)))
	}
	for _, subj := range subjects {
		for {
			sub, err := s.nc.ChanSubscribe(subj, changes)
			if err == nil {
				_ = sub.SetPendingLimits(-1, -1)
				fixed = append(fixed, sub)
				break
			}
			s.log.Warn("subscribe failed, retrying", "subject", subj, "error", err)
			select {
			case <-ctx.Done():
				return
			case <-s.clock.After(time.Second):
			}
		}
	}
	backoff := time.Duration(0)
	needLoad := true
	for {
		reconnected := s.tracker.Connected()
		_, groupsChanged := s.groups.Watch()
		var retry <-chan time.Time
		if needLoad && s.nc.IsConnected() {
			if err := s.reload(ctx, changes); err != nil {
				if ctx.Err() != nil {
					return
				}
				backoff = min(max(2*backoff, time.Second), reloadBackoffMax)
				s.log.Warn("re-reading schedules failed; keeping the cached copy", "retry_in", backoff.String(), "error", err)
				retry = s.clock.After(core.JitterBand(backoff, s.random()))
			} else {
				needLoad, backoff = false, 0
				if s.firstRead != nil {
					s.firstReadOnce.Do(func() { close(s.firstRead) })
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-retry:
		case <-reconnected:
			needLoad = true
		case <-groupsChanged:
			needLoad = true
		case m := <-changes:
			if s.applyChange(ctx, m, changes) {
				needLoad = true
			}
		}
	}
}

func (s *localScheduler) random() float64 {
	if s.rand != nil {
		return s.rand()
	}
	return 0.5
}

// applyChange applies one change seen on a subscription; it reports
// whether a full re-read is needed instead.
func (s *localScheduler) applyChange(ctx context.Context, m *nats.Msg, changes chan *nats.Msg) (reload bool) {
	if core.IsJSEvent(m.Subject) {
		s.log.Info("a bucket was created or deleted; re-reading", "subject", m.Subject)
		return true
	}
	present := !kvDeleted(m.Header.Get("KV-Operation"))
	if key, ok := core.KVKeyFromSubject(core.BucketFleetConfig, m.Subject); ok && key == core.KeyFreeze {
		s.update(func(c *localCache) bool {
			var next *cachedFreeze
			if present {
				next = &cachedFreeze{Value: string(m.Data)}
			}
			if (c.Freeze == nil) == (next == nil) && (next == nil || *next == *c.Freeze) {
				return false
			}
			c.Freeze = next
			s.log.Info("fleet freeze changed", "set", next != nil)
			return true
		})
		return false
	}
	if key, ok := core.KVKeyFromSubject(core.BucketScriptStatus, m.Subject); ok {
		value := strings.TrimSpace(string(m.Data))
		s.update(func(c *localCache) bool {
			old, had := c.ScriptStatus[key]
			if present {
				if had && old == value {
					return false
				}
				c.ScriptStatus[key] = value
			} else {
				if !had {
					return false
				}
				delete(c.ScriptStatus, key)
			}
			return true
		})
		return false
	}
	if key, ok := core.KVKeyFromSubject(core.BucketSchedules, m.Subject); ok {
		return s.applySchedule(ctx, key, present, m.Data, changes) != nil
	}
	if key, ok := core.KVKeyFromSubject(core.BucketJobs, m.Subject); ok {
		s.mu.Lock()
		old := s.cache
		s.mu.Unlock()
		var cj cachedJob
		keep := false
		if present {
			cj, keep = s.readJob(ctx, key, m.Data, old)
		}
		s.update(func(c *localCache) bool {
			if !s.needed(c)[key] {
				return false
			}
			prev, had := c.Jobs[key]
			switch {
			case keep && had && string(prev.Job) == string(cj.Job) && prev.ScriptSHA256 == cj.ScriptSHA256:
				return false
			case keep:
				c.Jobs[key] = cj
			case !had:
				return false
			case !present:
				delete(c.Jobs, key)
			default:
				return false // undecodable with no copy: nothing to change
			}
			return true
		})
	}
	return false
}

// applySchedule applies a change of one schedule. Only runs_on: agent
// schedules are kept, so the changes of backend schedules cost an agent
// nothing; a job newly needed is read (with its revoke row) right away.
func (s *localScheduler) applySchedule(ctx context.Context, id string, present bool, data []byte, changes chan *nats.Msg) error {
	agent := false
	if present {
		sch, err := schedule.Decode(data)
		if err != nil {
			s.log.Warn("schedule does not decode; keeping the copy cached before, if any", "schedule", id, "error", err)
			return nil
		}
		agent = sch.IsAgent()
	}
	s.mu.Lock()
	old := s.cache
	s.mu.Unlock()
	next := old.clone()
	if agent {
		next.Schedules[id] = json.RawMessage(data)
	} else {
		delete(next.Schedules, id)
	}
	if sameCache(old, next) {
		return nil
	}
	needed := s.needed(next)
	var missing []string
	for jobID := range needed {
		if _, ok := next.Jobs[jobID]; !ok {
			missing = append(missing, jobID)
		}
	}
	slices.Sort(missing)
	if err := s.readJobs(ctx, missing, old, next); err != nil {
		return err // re-read everything later
	}
	for jobID := range next.Jobs {
		if !needed[jobID] {
			delete(next.Jobs, jobID)
			delete(next.ScriptStatus, jobID)
		}
	}
	s.followKeys(needed, changes)
	s.log.Info("schedule changed", "schedule", id, "agent", agent)
	s.setCache(next, true)
	return nil
}

// update changes the cache in place under fn (which reports a change) and
// saves it.
func (s *localScheduler) update(fn func(*localCache) bool) {
	s.mu.Lock()
	c := s.cache.clone()
	changed := fn(c)
	s.mu.Unlock()
	if changed {
		s.setCache(c, true)
	}
}

func (c *localCache) clone() *localCache {
	n := &localCache{
		SavedAt: c.SavedAt, Groups: slices.Clone(c.Groups), Schedules: maps.Clone(c.Schedules),
		Jobs: maps.Clone(c.Jobs), ScriptStatus: maps.Clone(c.ScriptStatus),
	}
	if c.Freeze != nil {
		f := *c.Freeze
		n.Freeze = &f
	}
	n.normalize()
	return n
}

// reload reads everything fresh and replaces the cache when every read
// succeeded. Changes that arrive meanwhile stay queued in changes and are
// applied (or re-read) afterwards.
func (s *localScheduler) reload(ctx context.Context, changes chan *nats.Msg) error {
	fresh := newLocalCache()
	fresh.SavedAt = core.Now() // wire-style timestamp: when it was read
	s.mu.Lock()
	old := s.cache
	s.mu.Unlock()

	raws, err := kvList(ctx, s.nc, core.BucketSchedules)
	if err != nil && !errors.Is(err, errBucketMissing) {
		return fmt.Errorf("list %s: %w", core.BucketSchedules, err)
	}
	for id, raw := range raws {
		sch, err := schedule.Decode(raw)
		if err != nil {
			if prev, ok := old.Schedules[id]; ok {
				s.log.Warn("schedule does not decode; keeping the copy cached before", "schedule", id, "error", err)
				fresh.Schedules[id] = prev
			} else {
				s.log.Warn("schedule does not decode; it is skipped", "schedule", id, "error", err)
			}
			continue
		}
		if sch.IsAgent() {
			fresh.Schedules[id] = raw
		}
	}

	// Membership, so a cache written now carries it. Once this process
	// has read it, the live membership is as current as a read would be:
	// the groups followers re-read both rows at every reconnect, and a
	// change makes this scheduler read again (groupsChanged). Reading them
	// here too would cost every agent two more requests per reconnect.
	groups := []string{}
	if s.membershipRead {
		groups = s.groups.Get()
	}
	for _, bucket := range []string{core.BucketAgentGroups, core.BucketAgentGroupsDerived} {
		if !core.ValidKVKey(s.pc) || s.membershipRead {
			break
		}
		v, err := kvGet(ctx, s.nc, bucket, s.pc)
		if errors.Is(err, errBucketMissing) || (err == nil && !v.Present) {
			continue
		}
		if err != nil {
			return err
		}
		var g core.AgentGroups
		if err := json.Unmarshal(v.Data, &g); err != nil {
			s.log.Warn("group row does not decode; using the live membership", "bucket", bucket, "error", err)
			groups = append(groups, s.groups.Get()...)
			continue
		}
		groups = append(groups, g.Groups...)
	}
	fresh.Groups = core.NormalizeGroups(groups)

	// The jobs the schedules that target this pc name, with their revoke
	// rows and script digests.
	needed := s.needed(fresh)
	if err := s.readJobs(ctx, slices.Sorted(maps.Keys(needed)), old, fresh); err != nil {
		return err
	}

	fv, err := kvGet(ctx, s.nc, core.BucketFleetConfig, core.KeyFreeze)
	if err != nil && !errors.Is(err, errBucketMissing) {
		return err
	}
	if fv.Present {
		fresh.Freeze = &cachedFreeze{Value: string(fv.Data)}
	}

	s.followKeys(needed, changes)
	s.membershipRead = true
	if sameCache(old, fresh) {
		return nil
	}
	s.log.Info("schedules read from the broker", "agent_schedules", len(fresh.Schedules), "jobs", len(fresh.Jobs),
		"groups", fresh.Groups, "frozen", fresh.Freeze != nil)
	s.setCache(fresh, true)
	return nil
}

// needed is the set of jobs that the schedules in c targeting this pc name.
func (s *localScheduler) needed(c *localCache) map[string]bool {
	out := map[string]bool{}
	for _, raw := range c.Schedules {
		if sch, err := schedule.Decode(raw); err == nil && s.mine(sch, c.Groups) {
			out[sch.JobID] = true
		}
	}
	return out
}

// readJobs reads the jobs ids and their script_status rows into into. A
// job that does not decode keeps its copy in old, if any; a job absent from
// KV is left out (its schedules are held back with a WARN). Any failed read
// is an error, and into must then be dropped.
func (s *localScheduler) readJobs(ctx context.Context, ids []string, old, into *localCache) error {
	for _, id := range ids {
		delete(into.Jobs, id)
		delete(into.ScriptStatus, id)
		v, err := kvGet(ctx, s.nc, core.BucketJobs, id)
		if err != nil && !errors.Is(err, errBucketMissing) {
			return err
		}
		if v.Present {
			if cj, ok := s.readJob(ctx, id, v.Data, old); ok {
				into.Jobs[id] = cj
			}
		}
		st, err := kvGet(ctx, s.nc, core.BucketScriptStatus, id)
		if err != nil && !errors.Is(err, errBucketMissing) {
			return err
		}
		if st.Present {
			into.ScriptStatus[id] = strings.TrimSpace(string(st.Data))
		}
	}
	return nil
}

// readJob turns a jobs value into its cached form, resolving the digest of
// a script_object; ok is false when it does not decode and old has no copy.
func (s *localScheduler) readJob(ctx context.Context, id string, data []byte, old *localCache) (cachedJob, bool) {
	j, err := jobs.Decode(data)
	if err != nil {
		if prev, ok := old.Jobs[id]; ok {
			s.log.Warn("job does not decode; keeping the copy cached before", "job", id, "error", err)
			return prev, true
		}
		s.log.Warn("job does not decode; its schedules are skipped until it is fixed", "job", id, "error", err)
		return cachedJob{}, false
	}
	cj := cachedJob{Job: data}
	if key := j.Execute.ScriptObject; key != "" && s.prefetch != nil {
		sha, err := s.prefetch(ctx, key)
		if err != nil {
			if prev, ok := old.Jobs[id]; ok && jobScriptObject(prev) == key {
				sha = prev.ScriptSHA256
			}
			s.log.Warn("could not resolve the job's script_object; fires use the digest cached before, if any", "job", id, "script_object", key, "error", err)
		}
		cj.ScriptSHA256 = sha
	}
	return cj, true
}

func jobScriptObject(c cachedJob) string {
	if j, err := jobs.Decode(c.Job); err == nil {
		return j.Execute.ScriptObject
	}
	return ""
}

// sameCache compares two caches but for the time they were saved.
func sameCache(a, b *localCache) bool {
	x, y := *a, *b
	x.SavedAt, y.SavedAt = time.Time{}, time.Time{}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return string(ja) == string(jb)
}

// followKeys subscribes to the jobs and script_status keys of needed and
// drops the others.
func (s *localScheduler) followKeys(needed map[string]bool, changes chan *nats.Msg) {
	for _, f := range []struct {
		bucket string
		subs   map[string]*nats.Subscription
	}{{core.BucketJobs, s.jobSubs}, {core.BucketScriptStatus, s.statusSubs}} {
		for id, sub := range f.subs {
			if !needed[id] {
				_ = sub.Unsubscribe()
				delete(f.subs, id)
			}
		}
		for id := range needed {
			if _, ok := f.subs[id]; ok || !core.ValidToken(id) {
				continue
			}
			sub, err := s.nc.ChanSubscribe(core.SubjectKVKey(f.bucket, id), changes)
			if err != nil {
				s.log.Warn("cannot follow a key; its changes apply at the next re-read", "bucket", f.bucket, "key", id, "error", err)
				continue
			}
			_ = sub.SetPendingLimits(-1, -1)
			f.subs[id] = sub
		}
	}
}

// ---- firing ----

func (s *localScheduler) fireLoop(ctx context.Context) {
	if !s.waitFirstRead(ctx) {
		return
	}
	for {
		now := s.clock.Now()
		next := s.tick(now)
		var timer <-chan time.Time
		if !next.IsZero() {
			d := min(max(next.Sub(now), 0), schedulerMaxSleep)
			timer = s.clock.After(d)
		}
		select {
		case <-ctx.Done():
			return
		case <-timer:
		case <-s.wake:
		case <-s.fires.done:
		}
	}
}

// waitFirstRead holds the first look until the first read from the broker,
// startOfflineGrace when the broker is unreachable, or startReadWait at
// most. It reports false when ctx ended.
func (s *localScheduler) waitFirstRead(ctx context.Context) bool {
	if s.firstRead == nil {
		return true
	}
	grace, limit := s.clock.After(startOfflineGrace), s.clock.After(startReadWait)
	for {
		select {
		case <-ctx.Done():
			return false
		case <-s.firstRead:
			return true
		case <-limit:
			s.log.Warn("schedules could not be read from the broker in time; firing from the cached copy", "waited", core.FormatDuration(startReadWait))
			return true
		case <-grace:
			if s.tracker == nil || !s.tracker.IsConnected() {
				s.log.Info("broker unreachable; firing from the cached copy of the schedules")
				return true
			}
			grace = nil // connected: the read is under way
		}
	}
}

// tick evaluates every schedule at now, fires the due ones, and returns
// when to look again (zero: only a change can make anything due).
func (s *localScheduler) tick(now time.Time) time.Time {
	s.mu.Lock()
	c, decoded := s.cache, s.decoded
	s.mu.Unlock()
	groups := c.Groups
	var next time.Time
	soon := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	ids := slices.Sorted(maps.Keys(decoded))
	for id := range s.seen {
		if _, ok := decoded[id]; !ok {
			delete(s.seen, id)
			delete(s.cursor, id)
			delete(s.said, id)
		}
	}
	mine := 0
	defer func() { s.log.Debug("schedules evaluated", "mine", mine, "next", next.UTC().Format(time.RFC3339)) }()
	for _, id := range ids {
		sch := decoded[id]
		if !s.mine(sch, groups) {
			delete(s.seen, id) // targeted again later: starts afresh
			continue
		}
		// Compact: the cache file is indented, the broker's copy is not,
		// and the same schedule read from either must not start afresh.
		var b bytes.Buffer
		if json.Compact(&b, c.Schedules[id]) != nil {
			b.Reset()
			b.Write(c.Schedules[id])
		}
		if raw := b.String(); s.seen[id] != raw {
			s.seen[id] = raw
			s.cursor[id] = now
			delete(s.said, id)
			delete(s.startupDone, id)
		}
		mine++
		if why := sch.Unsupported(); why != "" || sch.When.PerTarget != nil {
			if why == "" {
				why = "when.per_target is served by the backend scheduler only"
			}
			s.hold(sch, why, slog.LevelWarn)
			continue
		}
		switch {
		case sch.When.Calendar != nil:
			loc := sch.Location(s.local)
			if tickAt, ok := sch.When.Last(s.cursor[id], now, loc); ok {
				s.attempt(c, sch, now, tickAt, false)
			}
			s.cursor[id] = now
			if t, ok := sch.When.Next(now, loc); ok {
				soon(t)
			}
		case sch.When.PerPC != nil:
			soon(s.perPC(c, sch, now))
		case sch.When.On != nil:
			s.startup(c, sch, now)
		}
	}
	return next
}

// perPC fires sch when it is due and returns when to look again.
func (s *localScheduler) perPC(c *localCache, sch *schedule.Schedule, now time.Time) time.Time {
	if s.fires.inFlight(sch.ID) {
		return time.Time{} // its end wakes the loop
	}
	if err := s.fires.readable(); err != nil {
		s.hold(sch, fmt.Sprintf("%s cannot be read, so whether it succeeded before is unknown (%v)", localCompletionsFile, err), slog.LevelWarn)
		return now.Add(schedulerMaxSleep)
	}
	last, done := s.fires.lastSuccess(schedule.CompletionKey(sch.ID, sch.JobID))
	if done {
		every, ok := sch.When.EveryDuration()
		if !ok {
			return time.Time{} // once, and done
		}
		if due := last.Add(every); due.After(now) {
			return due
		}
	}
	if until, ok := s.fires.retryAt(sch.ID); ok && until.After(now) {
		s.hold(sch, fmt.Sprintf("the last fire failed; retrying at %s", until.Format(time.RFC3339)), slog.LevelInfo)
		return until
	}
	if !s.attempt(c, sch, now, now, true) {
		// Held back: look again in a minute, or when a gate opens if
		// that is sooner.
		next := now.Add(schedulerMaxSleep)
		for _, t := range []time.Time{sch.GateChange(now, s.local), c.freezeState().Freeze.Change(now, s.local)} {
			if !t.IsZero() && t.Before(next) {
				next = t
			}
		}
		return next
	}
	return time.Time{}
}

// startup fires an `on: startup` schedule once per OS boot. The boot is
// marked before the gates run: a boot whose startup fire a freeze or a
// missing job held back is not fired later in that boot (upstream's rule).
func (s *localScheduler) startup(c *localCache, sch *schedule.Schedule, now time.Time) {
	if s.startupDone[sch.ID] {
		return
	}
	s.startupDone[sch.ID] = true
	if s.bootID == nil {
		b, err := s.boot()
		if err != nil {
			// As upstream: the agent's start stands in for the boot, so
			// startup schedules fire on every agent start.
			s.log.Warn("cannot tell the OS boot; on: startup schedules fire at every agent start", "error", err)
			b = bootIdentity{Time: uint64(now.Unix())}
		}
		s.bootID = &b
	}
	if m, ok := s.markers[sch.ID]; ok && s.bootID.sameBoot(m) {
		return // fired in this boot already
	}
	if d, ok := sch.StartingDeadlineDuration(); ok && s.bootID.Time != 0 {
		if up := now.Sub(time.Unix(int64(s.bootID.Time), 0)); up > d {
			s.log.Info("on: startup not fired: the agent started later after the boot than starting_deadline", "schedule", sch.ID,
				"uptime", core.FormatDuration(up.Round(time.Second)), "starting_deadline", sch.StartingDeadline)
			return
		}
	}
	s.markers[sch.ID] = s.bootID.marker()
	if b, err := json.MarshalIndent(s.markers, "", "  "); err == nil {
		if err := writeFileAtomic(filepath.Join(s.dataDir, startupMarkersFile), b); err != nil {
			s.log.Warn("could not save startup markers; a restart in this boot could fire it again", "error", err)
		}
	}
	s.log.Info("on: startup schedule: first look in this OS boot", "schedule", sch.ID)
	s.attempt(c, sch, now, now, false)
}

// attempt runs the gates for a fire of sch at tick and fires it; it
// reports whether it fired. quiet logs a hold-back once per reason (a
// per_pc held back every minute).
func (s *localScheduler) attempt(c *localCache, sch *schedule.Schedule, now, tick time.Time, quiet bool) bool {
	hold := func(why string, level slog.Level) bool {
		if quiet {
			s.hold(sch, why, level)
		} else {
			s.log.Log(context.Background(), level, "schedule tick skipped: "+why, "schedule", sch.ID, "job", sch.JobID,
				"tick", tick.UTC().Format(time.RFC3339))
		}
		return false
	}
	if frozen, why := c.freezeState().Frozen(now, s.local); frozen {
		return hold(why, slog.LevelInfo)
	}
	if why := sch.Gate(now, s.local); why != "" {
		return hold(why, slog.LevelInfo)
	}
	cj, ok := c.Jobs[sch.JobID]
	if !ok {
		return hold(fmt.Sprintf("job %q is not in the cache (missing from KV jobs, or not read yet); nothing is run", sch.JobID), slog.LevelWarn)
	}
	job, err := jobs.Decode(cj.Job)
	if err == nil {
		err = job.Validate()
	}
	if err != nil {
		return hold(fmt.Sprintf("job %q is not valid (%v); nothing is run", sch.JobID, strings.ReplaceAll(err.Error(), "\n", "; ")), slog.LevelWarn)
	}
	if job.Execute.ScriptObject != "" && cj.ScriptSHA256 == "" {
		return hold(fmt.Sprintf("the digest of job %q's script_object %s was never resolved (it is read while connected); nothing is run",
			sch.JobID, job.Execute.ScriptObject), slog.LevelWarn)
	}
	if s.fires.inFlight(sch.ID) {
		return hold("its previous fire has not finished", slog.LevelDebug)
	}
	if c.ScriptStatus[sch.JobID] == core.ScriptStatusRevoked {
		return hold(fmt.Sprintf("job %q is revoked (script_status[%s] = REVOKED)", sch.JobID, sch.JobID), slog.LevelInfo)
	}
	if s.enforcing != nil && s.enforcing() {
		return hold(enforcingHold, slog.LevelWarn)
	}
	opts := jobs.CommandOptions{RequestID: uuid.NewString(), ExecID: uuid.NewString(), Jitter: sch.JitterDuration(), ScriptSHA256: cj.ScriptSHA256}
	if d, ok := sch.StartingDeadlineDuration(); ok {
		dl := tick.Add(d).UTC()
		opts.DeadlineAt = &dl
	}
	cmd := job.Command(opts)
	if err := s.fire(&cmd, localOrigin{ScheduleID: sch.ID, JobID: sch.JobID}); err != nil {
		if !errors.Is(err, errNotAccepting) {
			s.log.Warn("could not start a schedule fire", "schedule", sch.ID, "error", err)
		}
		return false
	}
	delete(s.said, sch.ID)
	s.log.Info("schedule fired", "schedule", sch.ID, "job", sch.JobID, "when", sch.When.String(), "request_id", cmd.RequestID,
		"exec_id", cmd.ExecIDValue(), "tick", tick.UTC().Format(time.RFC3339))
	return true
}

// enforcingHold is why an enforcing agent fires no runs_on: agent schedule.
// A local fire is built from the job in KV jobs, which carries no
// signature: whoever can write that bucket would otherwise run code on a pc
// that refuses every unsigned command (SPEC-2 §5's promise). Backend
// schedules are fired by kanade scheduler as signed commands.
const enforcingHold = "this agent enforces signed commands, and an agent-side fire carries no signature (its job is read from KV jobs); nothing is run — use runs_on: backend, whose fires kanade scheduler signs"

// hold logs why sch is held back, once per reason (then at debug).
func (s *localScheduler) hold(sch *schedule.Schedule, why string, level slog.Level) {
	if s.said[sch.ID] == why {
		level = slog.LevelDebug
	}
	s.said[sch.ID] = why
	s.log.Log(context.Background(), level, "schedule held back: "+why, "schedule", sch.ID, "job", sch.JobID, "when", sch.When.String())
}

// prefetchScript resolves the digest of scripts/<key> from the object's
// info and caches its bytes (verified) for offline fires.
func prefetchScript(js jetstream.JetStream, src scriptSource) func(ctx context.Context, key string) (string, error) {
	return func(ctx context.Context, key string) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, scriptFetchTimeout)
		defer cancel()
		store, err := js.ObjectStore(ctx, core.ObjectScripts)
		if err != nil {
			return "", fmt.Errorf("object store %s: %w", core.ObjectScripts, err)
		}
		info, err := store.GetInfo(ctx, key)
		if err != nil {
			return "", err
		}
		sha, err := objectDigestHex(info.Digest)
		if err != nil {
			return "", err
		}
		if _, err := src.resolve(ctx, &core.Command{ScriptObject: key, ScriptObjectSHA256: sha}); err != nil {
			return "", err
		}
		return sha, nil
	}
}

// objectDigestHex turns an object store digest ("SHA-256=<base64url>")
// into lowercase hex.
func objectDigestHex(d string) (string, error) {
	b64, ok := strings.CutPrefix(d, "SHA-256=")
	if !ok {
		return "", fmt.Errorf("object digest %q is not SHA-256", d)
	}
	raw, err := base64.URLEncoding.DecodeString(b64)
	if err != nil {
		raw, err = base64.RawURLEncoding.DecodeString(b64)
	}
	if err != nil || len(raw) != 32 {
		return "", fmt.Errorf("object digest %q does not decode", d)
	}
	return hex.EncodeToString(raw), nil
}
