package jobs

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/fleet"
)

// ErrNotFound is returned when KV jobs has no job with the id asked for.
var ErrNotFound = errors.New("job not found")

// ErrNoScript is returned when a job's script_object is not in the scripts
// store.
var ErrNoScript = errors.New("script not in the catalog")

// Stored is a job as read from KV jobs.
type Stored struct {
	Job      *Job
	Revision uint64
}

// Get reads job id from KV jobs (tolerantly). A missing key is ErrNotFound.
func Get(ctx context.Context, js jetstream.JetStream, id string) (*Stored, error) {
	kv, err := js.KeyValue(ctx, core.BucketJobs)
	if err != nil {
		return nil, fmt.Errorf("open kv %q: %w", core.BucketJobs, err)
	}
	e, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("read job %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", core.BucketJobs, id, err)
	}
	j, err := Decode(e.Value())
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", core.BucketJobs, id, err)
	}
	return &Stored{Job: j, Revision: e.Revision()}, nil
}

// List reads every job in KV jobs in one pass, sorted by id. A value that
// does not decode is passed to bad and left out.
func List(ctx context.Context, js jetstream.JetStream, bad func(id string, err error)) ([]*Stored, error) {
	kv, err := js.KeyValue(ctx, core.BucketJobs)
	if err != nil {
		return nil, fmt.Errorf("open kv %q: %w", core.BucketJobs, err)
	}
	var out []*Stored
	err = fleet.ReadAll(ctx, kv, func(e jetstream.KeyValueEntry) {
		j, err := Decode(e.Value())
		if err != nil {
			if bad != nil {
				bad(e.Key(), err)
			}
			return
		}
		out = append(out, &Stored{Job: j, Revision: e.Revision()})
	})
	sort.Slice(out, func(a, b int) bool { return out[a].Job.ID < out[b].Job.ID })
	return out, err
}

// ReadWords reads a bucket whose values are bare words (script_current,
// script_status) in one pass: key → trimmed value. A missing bucket reads
// as empty.
func ReadWords(ctx context.Context, js jetstream.JetStream, bucket string) (map[string]string, error) {
	out := map[string]string{}
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("open kv %q: %w", bucket, err)
	}
	err = fleet.ReadAll(ctx, kv, func(e jetstream.KeyValueEntry) {
		out[e.Key()] = strings.TrimSpace(string(e.Value()))
	})
	return out, err
}

// Word reads one bare-word value, "" when the key or bucket is missing.
func Word(ctx context.Context, js jetstream.JetStream, bucket, key string) (string, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("open kv %q: %w", bucket, err)
	}
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s/%s: %w", bucket, key, err)
	}
	return strings.TrimSpace(string(e.Value())), nil
}

// ScriptDigest is the script_object_sha256 of key in object store scripts,
// from the store's own digest (no download). A missing object is
// ErrNoScript.
func ScriptDigest(ctx context.Context, js jetstream.JetStream, key string) (string, error) {
	store, err := js.ObjectStore(ctx, core.ObjectScripts)
	if err != nil {
		return "", fmt.Errorf("open object store %q: %w", core.ObjectScripts, err)
	}
	info, err := store.GetInfo(ctx, key)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return "", fmt.Errorf("%s/%s: %w (publish it with `kanade script publish`)", core.ObjectScripts, key, ErrNoScript)
	}
	if err != nil {
		return "", fmt.Errorf("look up %s/%s: %w", core.ObjectScripts, key, err)
	}
	d := ObjectSHA256(info)
	if d == "" {
		return "", fmt.Errorf("%s/%s has no SHA-256 digest (%q); publish it again", core.ObjectScripts, key, info.Digest)
	}
	return d, nil
}

// ObjectSHA256 is the lowercase hex SHA-256 of an object from the store's
// "SHA-256=<base64url>" digest, "" when it has none.
func ObjectSHA256(info *jetstream.ObjectInfo) string {
	raw, ok := strings.CutPrefix(info.Digest, "SHA-256=")
	if !ok {
		return ""
	}
	b, err := base64.URLEncoding.DecodeString(raw)
	if err != nil {
		if b, err = base64.RawURLEncoding.DecodeString(raw); err != nil {
			return ""
		}
	}
	return hex.EncodeToString(b)
}
