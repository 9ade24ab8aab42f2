package cmdutil

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// CASAttempts bounds the read-modify-write retries when another writer
// changes the key between our read and our write.
const CASAttempts = 5

// CASUpdate is a compare-and-swap read-modify-write of the JSON object at
// key: edit changes obj (nil-safe, empty when the key does not exist) and
// reports whether it changed anything; the object is written back only if
// the key is still at the revision read, else the whole cycle is retried.
// Fields edit does not touch, including ones this build does not know, are
// kept as they were.
func CASUpdate(ctx context.Context, kv jetstream.KeyValue, key string, edit func(obj map[string]json.RawMessage) (bool, error)) (rev uint64, changed bool, err error) {
	for attempt := 1; ; attempt++ {
		obj := map[string]json.RawMessage{}
		var have uint64
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return 0, false, fmt.Errorf("read %s/%s: %w", kv.Bucket(), key, err)
		default:
			have = e.Revision()
			if len(e.Value()) > 0 {
				if err := json.Unmarshal(e.Value(), &obj); err != nil {
					return 0, false, fmt.Errorf("read %s/%s: the value is not a JSON object (%v); fix or delete it", kv.Bucket(), key, err)
				}
				if obj == nil {
					obj = map[string]json.RawMessage{}
				}
			}
		}
		changed, err := edit(obj)
		if err != nil {
			return 0, false, err
		}
		if !changed {
			return have, false, nil
		}
		body, err := json.Marshal(obj)
		if err != nil {
			return 0, false, fmt.Errorf("encode %s/%s: %w", kv.Bucket(), key, err)
		}
		var werr error
		if have == 0 {
			rev, werr = kv.Create(ctx, key, body)
		} else {
			rev, werr = kv.Update(ctx, key, body, have)
		}
		if werr == nil {
			return rev, true, nil
		}
		conflict := errors.Is(werr, jetstream.ErrKeyExists) || errors.Is(werr, jetstream.ErrKeyRevisionMismatch)
		if !conflict || attempt >= CASAttempts {
			if conflict {
				return 0, false, fmt.Errorf("write %s/%s: it kept changing under us (%d tries): %w", kv.Bucket(), key, attempt, werr)
			}
			return 0, false, fmt.Errorf("write %s/%s: %w", kv.Bucket(), key, werr)
		}
	}
}
