package winagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent/runner"
)

// Scripts from the catalog (SPEC-2 §1). A Command with script_object names
// a key <name>/<version> in object store `scripts` and the SHA-256 of its
// bytes; its script field is "". The agent never runs an empty script in
// its place: a missing object, a digest that does not match, a script over
// 4 MiB or one that is not UTF-8 stops the run with exit -1 and stderr
// naming the key and the reason. Verified scripts are cached under
// <data_dir>/script_cache/<sha256> and hashed again on every read, so a
// damaged cache file is fetched anew rather than run.

// scriptCacheDir is the cache's directory under the data dir.
const scriptCacheDir = "script_cache"

// scriptFetchTimeout bounds one fetch from the object store.
const scriptFetchTimeout = 60 * time.Second

// scriptSource resolves a Command's script.
type scriptSource struct {
	js       jetstream.JetStream
	cacheDir string
}

// resolve returns cmd's script: the inline one, or the catalog object's
// verified bytes. The error says what is wrong, naming the key.
func (s scriptSource) resolve(ctx context.Context, cmd *core.Command) (string, error) {
	if cmd.ScriptObject == "" {
		return cmd.Script, nil
	}
	key := cmd.ScriptObject
	want := strings.ToLower(strings.TrimSpace(cmd.ScriptObjectSHA256))
	if len(want) != 64 || // hex of a 32-byte SHA-256
		strings.Trim(want, "0123456789abcdef") != "" {
		return "", fmt.Errorf("script_object %q: script_object_sha256 %q is not a SHA-256 in hex; not run", key, cmd.ScriptObjectSHA256)
	}
	cached := filepath.Join(s.cacheDir, want)
	if b, err := os.ReadFile(cached); err == nil {
		if core.ScriptSHA256(b) == want {
			return string(b), nil
		}
		_ = os.Remove(cached) // damaged: fetch it again
	}
	b, err := s.fetch(ctx, key)
	if err != nil {
		return "", err
	}
	switch {
	case core.ScriptSHA256(b) != want:
		return "", fmt.Errorf("script_object %q: digest mismatch (object has sha256 %s, command says %s); not run", key, core.ScriptSHA256(b), want)
	case !utf8.Valid(b):
		return "", fmt.Errorf("script_object %q: the script is not UTF-8; not run", key)
	}
	if err := os.MkdirAll(s.cacheDir, 0o700); err == nil {
		tmp := cached + ".tmp"
		if os.WriteFile(tmp, b, 0o600) == nil {
			_ = os.Rename(tmp, cached)
		}
		_ = os.Remove(tmp)
	}
	return string(b), nil
}

// fetch reads key from object store scripts, at most runner.MaxScript bytes.
func (s scriptSource) fetch(ctx context.Context, key string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, scriptFetchTimeout)
	defer cancel()
	store, err := s.js.ObjectStore(ctx, core.ObjectScripts)
	if err != nil {
		return nil, fmt.Errorf("script_object %q: object store %s: %w; not run", key, core.ObjectScripts, err)
	}
	info, err := store.GetInfo(ctx, key)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("script_object %q: no such object in %s; not run", key, core.ObjectScripts)
	}
	if err != nil {
		return nil, fmt.Errorf("script_object %q: %w; not run", key, err)
	}
	if info.Size > runner.MaxScript {
		return nil, fmt.Errorf("script_object %q: the script is %d bytes, over the 4 MiB (%d bytes) limit; not run", key, info.Size, runner.MaxScript)
	}
	r, err := store.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("script_object %q: %w; not run", key, err)
	}
	defer r.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(r, runner.MaxScript+1)); err != nil {
		return nil, fmt.Errorf("script_object %q: read: %w; not run", key, err)
	}
	if buf.Len() > runner.MaxScript {
		return nil, fmt.Errorf("script_object %q: the script is over the 4 MiB (%d bytes) limit; not run", key, runner.MaxScript)
	}
	return buf.Bytes(), nil
}
